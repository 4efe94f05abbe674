package dhttest

import (
	"testing"

	"github.com/peer-overlay/peer/dht/chord"
)

func build(t testing.TB, s *Sim, n int) {
	t.Helper()
	if err := s.Grow(n); err != nil {
		t.Fatal(err)
	}
}

func TestSmallRingsConverge(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8, 9, 10, 64} {
		s := New(Config{Seed: uint64(n)})
		build(t, s, n)
		if err := s.Check(); err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
	}
}

func TestLookupsAfterConvergence(t *testing.T) {
	s := New(Config{Seed: 7})
	build(t, s, 200)
	s.RunFor(30_000) // let fingers settle
	t.Logf("fingers right: %.3f", s.FingersRight())
	members := s.Members()
	type pending struct {
		n  *Node
		id uint64
		k  chord.ID
	}
	var ps []pending
	for range 1000 {
		var k chord.ID
		for i := range k {
			k[i] = byte(s.rng.UintN(256))
		}
		n := members[s.rng.IntN(len(members))]
		ps = append(ps, pending{n, s.Lookup(n, k), k})
	}
	s.RunFor(10_000)
	hops := 0
	for _, p := range ps {
		r := s.Result(p.n, p.id)
		if r == nil || r.Err != nil {
			t.Fatalf("lookup %v: %+v", p.k, r)
		}
		if want := s.Owner(p.k); r.Owner != want.Peer {
			t.Fatalf("lookup %s from %s: owner %s, want %s", p.k.Short(), p.n.Peer, r.Owner, want.Peer)
		}
		hops += r.Hops
	}
	t.Logf("mean hops %.2f", float64(hops)/float64(len(ps)))
}

// A crowd of peers that all join through one bootstrap at once (as when a
// cluster of peers is launched together) all find the same successor; the
// ring must still sort them out in a few rounds, not one round per peer.
func TestFlashCrowdConverges(t *testing.T) {
	s := New(Config{Seed: 11})
	build(t, s, 2)
	boot := s.Members()[0]
	for range 1000 {
		s.Join(s.Add(), boot)
	}
	start := s.Now()
	ok := s.RunUntil(func() bool { ok, _ := s.Converged(); return ok }, 500, 30_000)
	if !ok {
		_, err := s.Converged()
		t.Fatalf("1000 peers joining at once: not converged after 30 simulated s: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("1002 members converged %.1f simulated s after the crowd joined", float64(s.Now()-start)/1000)
}

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

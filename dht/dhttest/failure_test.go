package dhttest

import (
	"slices"
	"strings"
	"testing"

	"github.com/peer-overlay/peer/dht/chord"
)

func randomKey(s *Sim) chord.ID {
	var k chord.ID
	for i := range k {
		k[i] = byte(s.rng.UintN(256))
	}
	return k
}

// lookupAll runs one lookup per key and fails the test if any never
// finishes.
func lookupAll(t *testing.T, s *Sim, keys []chord.ID) []*chord.LookupResult {
	t.Helper()
	out := s.LookupAll(keys)
	for i, r := range out {
		if r == nil {
			t.Fatalf("lookup of %s never finished", keys[i].Short())
		}
	}
	return out
}

// A quarter of the nodes crash at once: the ring reconverges, and every key
// that still has a live replica is found together with that replica.
func TestQuarterCrash(t *testing.T) {
	s := New(Config{Seed: 11})
	build(t, s, 256)
	s.RunFor(20_000)
	r := s.R()
	keys := make([]chord.ID, 2000)
	holders := make([][]*Node, len(keys))
	sorted := s.sortedMembers()
	for i := range keys {
		keys[i] = randomKey(s)
		o := ownerIn(sorted, keys[i])
		j := slices.Index(sorted, o)
		for c := range r {
			holders[i] = append(holders[i], sorted[(j+c)%len(sorted)])
		}
	}
	live := s.Members()
	s.rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	for _, n := range live[:len(live)/4] {
		s.Crash(n)
	}
	if !s.RunUntil(func() bool { ok, _ := s.Converged(); return ok }, 500, 120_000) {
		_, err := s.Converged()
		t.Fatalf("no convergence after the crash: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	results := lookupAll(t, s, keys)
	lost, found := 0, 0
	for i, res := range results {
		if res.Err != nil {
			t.Fatalf("lookup %s: %v", keys[i].Short(), res.Err)
		}
		if want := s.Owner(keys[i]); res.Owner != want.Peer {
			t.Fatalf("lookup %s: owner %s, want %s", keys[i].Short(), res.Owner, want.Peer)
		}
		var alive []chord.Peer
		for _, h := range holders[i] {
			if h.Alive {
				alive = append(alive, h.Peer)
			}
		}
		if len(alive) == 0 {
			lost++
			continue
		}
		// The replica set the lookup returns must reach a surviving copy.
		if !slices.ContainsFunc(res.Succs, func(p chord.Peer) bool { return slices.Contains(alive, p) }) {
			t.Fatalf("key %s: survivors %v not among the returned replica set %v", keys[i].Short(), alive, res.Succs)
		}
		found++
	}
	t.Logf("%d keys found with a surviving replica, %d had lost every copy", found, lost)
}

// A partition splits the ring in two; each side heals into its own ring.
// When the network heals, the membership layer's hint (Merge through a
// peer of the other side) joins them back into one ideal ring.
func TestPartitionHeals(t *testing.T) {
	s := New(Config{Seed: 12})
	build(t, s, 64)
	s.Partition(func(n *Node) int { return int(n.Peer.ID[0] % 2) })
	ok := s.RunUntil(func() bool { return s.Check() != nil }, 500, 60_000)
	if !ok {
		t.Fatal("the partition never split the ring")
	}
	s.RunFor(30_000)
	err := s.Check()
	if err == nil || !strings.Contains(err.Error(), "2 rings") {
		t.Fatalf("after 30 s apart: %v, want two rings", err)
	}
	t.Logf("apart: %v", err)
	start := s.Now()
	s.Heal()
	members := s.Members()
	merged := s.RunUntil(func() bool {
		for _, n := range members {
			via := members[s.rng.IntN(len(members))]
			n.Core.Merge(via.Peer)
			s.drain(n)
		}
		ok, _ := s.Converged()
		return ok
	}, 1000, 120_000)
	if !merged {
		_, err := s.Converged()
		t.Fatalf("rings did not merge: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("one ideal ring again %d ms after healing", s.Now()-start)
}

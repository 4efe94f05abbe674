package dhttest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/peer-overlay/peer/dht/chord"
)

// A peer restarted before anyone has taken it for dead keeps its identity,
// so its neighbours still have it in their successor lists and fingers,
// while its fresh core is in no ring and has no successor list to give. No
// member may take that empty answer for a list: every member's successor
// list stays (nearly) full, lookups keep working while the peer is out,
// and once it joins again, through its own predecessor even, the ring
// converges with it in.
func TestRestartBeforeDetection(t *testing.T) {
	for _, seed := range []uint64{21, 22, 23, 24} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			s := New(Config{Seed: seed})
			build(t, s, 32)
			s.RunFor(10_000) // let the fingers settle
			sorted := s.sortedMembers()
			i := s.rng.IntN(len(sorted))
			x, pred := sorted[i], sorted[(i-1+len(sorted))%len(sorted)]

			// shortest tracks the shortest successor list any other member
			// holds from the restart on.
			r := s.R()
			shortest, who := r, ""
			watch := func(until func() bool, limit int64) bool {
				end := s.now + limit
				for s.now < end {
					if until != nil && until() {
						return true
					}
					if !s.Step() {
						break
					}
					for _, m := range s.Members() {
						if m == x {
							continue
						}
						if n := len(m.Core.Succs()); n < shortest {
							shortest, who = n, fmt.Sprintf("%s at t=%d ms: %v", m.Peer, s.now, m.Core.Succs())
						}
					}
				}
				return until != nil && until()
			}

			s.Restart(x)
			// The restarted peer joins only after a while (the daemon waits
			// for membership first); meanwhile the others look keys up.
			watch(nil, 1000)
			var ls []struct {
				n  *Node
				id uint64
			}
			for range 200 {
				m := sorted[s.rng.IntN(len(sorted))]
				if m == x {
					continue
				}
				ls = append(ls, struct {
					n  *Node
					id uint64
				}{m, s.Lookup(m, randomKey(s))})
			}
			watch(nil, 2000)
			for _, l := range ls {
				res := s.Result(l.n, l.id)
				if res == nil {
					watch(func() bool { return s.Result(l.n, l.id) != nil }, 10_000)
					res = s.Result(l.n, l.id)
				}
				if res == nil || res.Err != nil {
					t.Errorf("lookup from %s while %s was restarting: %+v", l.n.Peer, x.Peer, res)
				}
			}

			s.Join(x, pred)
			if !watch(func() bool { ok, _ := s.Converged(); return ok }, 30_000) {
				_, err := s.Converged()
				t.Fatalf("no convergence 30 s after %s rejoined: %v", x.Peer, err)
			}
			if err := s.Check(); err != nil {
				t.Fatal(err)
			}
			if !slices.ContainsFunc(pred.Core.Succs(), func(p chord.Peer) bool { return p == x.Peer }) {
				t.Fatalf("%s is not back in its predecessor's list %v", x.Peer, pred.Core.Succs())
			}
			// A list may lose the restarted peer for a while (one entry
			// short until refilled), never more.
			if shortest < r-1 {
				t.Fatalf("a successor list shrank to %d of %d entries: %s", shortest, r, who)
			}
			t.Logf("restarted %s; shortest successor list meanwhile %d of %d", x.Peer, shortest, r)
		})
	}
}

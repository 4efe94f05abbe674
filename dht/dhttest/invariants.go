package dhttest

import (
	"fmt"
	"slices"

	"github.com/peer-overlay/peer/dht/chord"
)

// Check tests the ring invariants of Zave's corrected Chord over the live
// members, against the simulator's true view of who is up:
//
//   - every successor list has a live entry;
//   - every successor list is ordered clockwise from its owner, without
//     duplicates, and holds the owner only as its last entry;
//   - following each member's first live successor leads every member to
//     one and the same cycle: there is exactly one ring;
//   - that ring goes round the identifier space exactly once.
//
// It returns the first violation found.
func (s *Sim) Check() error {
	members := s.Members()
	if len(members) == 0 {
		return nil
	}
	best := make(map[string]*Node, len(members))
	for _, m := range members {
		list := m.Core.Succs()
		if err := ordered(m.Peer, list); err != nil {
			return err
		}
		var b *Node
		for _, p := range list {
			if x := s.byName[p.Name]; x != nil && x.Alive {
				b = x
				break
			}
		}
		if b == nil {
			return fmt.Errorf("%s: no live entry in its successor list %v", m.Peer, list)
		}
		if !b.Core.Joined() {
			return fmt.Errorf("%s: first live successor %s is not a member", m.Peer, b.Peer)
		}
		best[m.Peer.Name] = b
	}
	// Walk the functional graph m → best[m]; colour 1 = on the current
	// path, 2 = done. A walk that meets its own path closes a cycle.
	colour := make(map[string]int, len(members))
	cycles := 0
	var ring []*Node
	for _, start := range members {
		if colour[start.Peer.Name] != 0 {
			continue
		}
		var path []*Node
		x := start
		for colour[x.Peer.Name] == 0 {
			colour[x.Peer.Name] = 1
			path = append(path, x)
			x = best[x.Peer.Name]
		}
		if colour[x.Peer.Name] == 1 {
			cycles++
			i := slices.Index(path, x)
			ring = path[i:]
		}
		for _, p := range path {
			colour[p.Peer.Name] = 2
		}
	}
	if cycles != 1 {
		return fmt.Errorf("%d rings among %d members", cycles, len(members))
	}
	// Count the edges that cross zero: going round once crosses it once.
	wraps := 0
	for i, a := range ring {
		b := ring[(i+1)%len(ring)]
		if b.Peer.ID.Cmp(a.Peer.ID) <= 0 {
			wraps++
		}
	}
	if wraps != 1 {
		return fmt.Errorf("the ring of %d members goes round the identifier space %d times", len(ring), wraps)
	}
	return nil
}

// ordered checks one successor list.
func ordered(owner chord.Peer, list []chord.Peer) error {
	var last chord.ID
	seen := make(map[string]bool, len(list))
	for i, p := range list {
		if seen[p.Name] {
			return fmt.Errorf("%s: duplicate %s in successor list %v", owner, p, list)
		}
		seen[p.Name] = true
		if p.Name == owner.Name {
			if i != len(list)-1 {
				return fmt.Errorf("%s: itself in the middle of its successor list %v", owner, list)
			}
			continue
		}
		d := p.ID.Sub(owner.ID)
		if i > 0 && d.Cmp(last) <= 0 {
			return fmt.Errorf("%s: successor list out of clockwise order at %d: %v", owner, i, list)
		}
		last = d
	}
	return nil
}

// sortedMembers returns the live members in identifier order.
func (s *Sim) sortedMembers() []*Node {
	m := s.Members()
	slices.SortFunc(m, func(a, b *Node) int { return a.Peer.ID.Cmp(b.Peer.ID) })
	return m
}

// Converged reports whether every live member's predecessor and successor
// list are those of the ideal ring over the live members; when not, err
// names the first difference.
func (s *Sim) Converged() (ok bool, err error) {
	m := s.sortedMembers()
	if len(m) != len(s.Live()) {
		return false, fmt.Errorf("%d of %d live nodes have joined", len(m), len(s.Live()))
	}
	r := s.cfg.R
	for i, x := range m {
		want := make([]chord.Peer, 0, r)
		for j := 1; j <= r && j < len(m); j++ {
			want = append(want, m[(i+j)%len(m)].Peer)
		}
		if len(m)-1 < r {
			want = append(want, x.Peer)
		}
		if got := x.Core.Succs(); !slices.Equal(got, want) {
			return false, fmt.Errorf("%s: successors %v, want %v", x.Peer, got, want)
		}
		if len(m) > 1 {
			if wantPred := m[(i-1+len(m))%len(m)].Peer; x.Core.Pred() != wantPred {
				return false, fmt.Errorf("%s: predecessor %s, want %s", x.Peer, x.Core.Pred(), wantPred)
			}
		}
	}
	return true, nil
}

// FingersRight reports the fraction of members whose every finger is the
// true successor of its start (zero where that successor is the member
// itself).
func (s *Sim) FingersRight() float64 {
	m := s.sortedMembers()
	if len(m) == 0 {
		return 1
	}
	right := 0
	for _, x := range m {
		good := true
		for k := range chord.IDBits {
			o := ownerIn(m, x.Peer.ID.FingerStart(k))
			want := o.Peer
			if o == x {
				want = chord.Peer{}
			}
			if x.Core.Finger(k) != want {
				good = false
				break
			}
		}
		if good {
			right++
		}
	}
	return float64(right) / float64(len(m))
}

// ownerIn finds successor(key) in members sorted by identifier.
func ownerIn(sorted []*Node, key chord.ID) *Node {
	i, _ := slices.BinarySearchFunc(sorted, key, func(n *Node, k chord.ID) int { return n.Peer.ID.Cmp(k) })
	if i == len(sorted) {
		i = 0
	}
	return sorted[i]
}

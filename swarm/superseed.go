package swarm

// Super-seeding (BEP 16): the first seed offers pieces a few at a time,
// each to one peer, until every piece is out once.

import (
	"github.com/peer-overlay/peer/swarm/wire"
)

// offerLocked, while super-seeding, shows c the pieces that have been sent
// least, a couple at a time, so that the seed's upload never carries a
// piece twice before every piece once.
func (s *Swarm) offerLocked(c *conn) {
	n := len(s.offers)
	for len(c.offered) < superSeedOffers {
		best := -1
		start := s.rng.IntN(n)
		for k := range n {
			i := (start + k) % n
			if c.bits.Has(i) || c.offered[i] {
				continue
			}
			if best < 0 || less(s.inSwarm[i], s.offers[i], s.inSwarm[best], s.offers[best]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		c.offered[best] = true
		s.offers[best]++
		c.send(&wire.Message{ID: wire.Have, Index: uint32(best)})
	}
}

func less(inA bool, offA int, inB bool, offB int) bool {
	if inA != inB {
		return !inA
	}
	return offA < offB
}

// endSuperSeedLocked: every piece is out in the swarm; show everything.
func (s *Swarm) endSuperSeedLocked() {
	s.superSeed = false
	for _, c := range s.conns {
		c.send(&wire.Message{ID: wire.HaveAll})
	}
	s.log.Debug("every piece is in the swarm: super-seeding ends")
}

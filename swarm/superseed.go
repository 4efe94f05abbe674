package swarm

// Super-seeding (BEP 16): the first seed offers pieces a few at a time,
// each to one peer, until every piece is out once.

import (
	"github.com/peer-overlay/peer/swarm/wire"
)

// offerLocked, while super-seeding, shows c the pieces that have been sent
// least, a couple at a time, so that the seed's upload never carries a
// piece twice before every piece once.
//
// Under an egress budget, super-seeding goes on past the first pass (each
// piece offered to one more peer at a time, least offered first) until
// the budget is spent, and then offers nothing more: the leechers hold
// every piece between them and trade the rest. A seed that kept serving
// every request at its full rate carried about 1.9 copies of the file to
// 31 peers in the time the bound allows, where a copy and a little more
// is what only it can give. Its first pass is stricter too: a piece on
// offer to one peer is not offered to another until it is out, which
// plain super-seeding does when a crowd outnumbers the pieces in flight.
func (s *Swarm) offerLocked(c *conn) {
	if s.egressBudget > 0 && c.amChoking && c.peerInterested {
		// It wants what it was shown and cannot have it yet: offers wait
		// for its unchoke (a peer not yet interested is shown something
		// to be interested in).
		return
	}
	n := len(s.offers)
	var onOffer map[int]bool
	firstPass := s.egressBudget > 0 && !s.everyOut
	if firstPass {
		onOffer = make(map[int]bool)
		for _, o := range s.conns {
			for i := range o.offered {
				onOffer[i] = true
			}
		}
	}
	for len(c.offered) < superSeedOffers {
		best := -1
		start := s.rng.IntN(n)
		for k := range n {
			i := (start + k) % n
			if c.bits.Has(i) || c.offered[i] || firstPass && (s.inSwarm[i] || onOffer[i]) {
				continue
			}
			if best < 0 || less(s.inSwarm[i], s.offers[i], s.inSwarm[best], s.offers[best]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		size := s.info.PieceSize(best)
		if s.egressBudget > 0 && s.everyOut && s.offeredBytes+size > s.egressBudget {
			return // an offer is bytes promised: the budget counts them
		}
		s.offeredBytes += size
		if onOffer != nil {
			onOffer[best] = true
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

// releaseOffersLocked, under an egress budget, takes back what is on offer
// to c, which the seed has just choked: its first pass offers a piece to
// one peer at a time, and a piece on offer to a peer that cannot ask for
// it stayed out of the swarm until the choker turned again (every target
// of a job waited on such pieces, and none finished). The budget gets the
// offers back, and the pieces go to peers that can take them.
func (s *Swarm) releaseOffersLocked(c *conn) {
	if !s.superSeed || s.egressBudget == 0 || len(c.offered) == 0 {
		return
	}
	for i := range c.offered {
		s.offeredBytes -= s.info.PieceSize(i)
		s.offers[i]--
		delete(c.offered, i)
	}
	for _, o := range s.conns {
		if o != c && !o.closed {
			s.offerLocked(o)
		}
	}
}

// recheckOutLocked, under an egress budget, takes back as not out in the
// swarm the pieces that no live peer of the seed holds or was sent whole:
// they went with a closed connection. With the seed giving each piece to
// one peer and then stopping, a target killed before it passed its pieces
// on took them out of the swarm, and the others waited for it to come back
// (+130% for the last of 8), or for ever if it came back without them.
// Such pieces are offered again, budget or not. It runs when a connection
// closes and on every tick (a connection replaced by the peer's new one is
// never dropped as such). A piece may still be at a peer the seed has no
// connection to; sending it again costs little.
func (s *Swarm) recheckOutLocked() {
	// Only a connection that went (or was replaced) takes pieces with it:
	// with none since the last check, there is nothing to find, and the
	// scan (pieces × connections) is not repeated every second.
	if !s.superSeed || s.egressBudget == 0 || s.info == nil || !s.connsChanged {
		return
	}
	s.connsChanged = false
	lost := 0
	for i := range s.inSwarm {
		if !s.inSwarm[i] {
			continue
		}
		held := false
		for _, o := range s.conns {
			if !o.closed && (o.bits.Has(i) || o.given[i]) {
				held = true
				break
			}
		}
		if !held {
			s.inSwarm[i] = false
			lost++
		}
	}
	if lost == 0 {
		return
	}
	s.everyOut = false
	s.log.Debug("pieces at no live peer of the seed: offering them again", "pieces", lost)
	for _, o := range s.conns {
		if !o.closed {
			s.offerLocked(o)
		}
	}
}

// LiftEgressBudget lets the seed upload without bound again (a leecher is
// stuck, say, and only the seed can help it): if every piece is out, it
// shows everything at once, as super-seeding's end does. It reports
// whether there was a budget to lift.
func (s *Swarm) LiftEgressBudget() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.egressBudget == 0 {
		return false
	}
	s.egressBudget = 0
	if s.superSeed && s.everyOut {
		s.endSuperSeedLocked()
	}
	return true
}

// EgressBudget is the seed's upload bound in bytes (0: none).
func (s *Swarm) EgressBudget() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.egressBudget
}

// endSuperSeedLocked: every piece is out in the swarm; show everything.
func (s *Swarm) endSuperSeedLocked() {
	s.superSeed = false
	for _, c := range s.conns {
		c.send(&wire.Message{ID: wire.HaveAll})
	}
	s.log.Debug("every piece is in the swarm: super-seeding ends")
}

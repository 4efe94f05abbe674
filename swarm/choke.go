package swarm

// Choking: who this peer uploads to, and how interest follows what peers
// have.

import (
	"time"

	"github.com/peer-overlay/peer/swarm/choker"
	"github.com/peer-overlay/peer/swarm/wire"
)

// spareLocked is the fraction of upload capacity this swarm left unused
// lately, which the choker's extra slots follow: of its own cap, of the
// global cap, or the less of the two when both bind; 0 when uncapped (the
// regular slots then take whatever they can).
func (s *Swarm) spareLocked(now time.Time) float64 {
	global, capped := s.m.globalSpare(now)
	if s.up == nil {
		return global // 0 when uncapped
	}
	s.upSpare.read(now, s.upBytes, float64(s.up.l.Limit()))
	if capped {
		return min(global, s.upSpare.spare)
	}
	return s.upSpare.spare
}

// rechokeLocked runs the choker and applies its decision.
func (s *Swarm) rechokeLocked(now time.Time) {
	if len(s.conns) == 0 {
		return
	}
	ms := now.UnixMilli()
	peers := make([]choker.Peer, 0, len(s.conns))
	for _, c := range s.conns {
		var last int64
		if !c.lastBlock.IsZero() {
			last = c.lastBlock.UnixMilli()
		}
		peers = append(peers, choker.Peer{
			ID: string(c.p), Interested: c.peerInterested,
			DownRate: c.downRate, UpRate: c.upRate,
			LastBlock: last, Connected: c.connected.UnixMilli(),
		})
	}
	unchoke := s.chok.Decide(ms, peers, s.complete, s.spare)
	for _, c := range s.conns {
		want := unchoke[string(c.p)]
		if want == !c.amChoking {
			continue
		}
		c.amChoking = !want
		if want {
			c.send(&wire.Message{ID: wire.Unchoke})
			if s.superSeed && s.egressBudget > 0 {
				s.offerLocked(c)
			}
		} else {
			c.send(&wire.Message{ID: wire.Choke})
			for _, r := range c.reqs {
				c.send(&wire.Message{ID: wire.Reject, Index: r.Index, Begin: r.Begin, Length: r.Length})
			}
			c.reqs = c.reqs[:0]
			s.releaseOffersLocked(c)
		}
	}
}

// updateInterestLocked tells c whether we want anything it has.
func (s *Swarm) updateInterestLocked(c *conn) {
	want := s.pick != nil && !s.complete && s.pick.Interesting(string(c.p))
	if want == c.amInterested {
		return
	}
	c.amInterested = want
	if want {
		c.send(&wire.Message{ID: wire.Interested})
		s.fillLocked(c)
	} else {
		c.send(&wire.Message{ID: wire.NotInterested})
	}
}

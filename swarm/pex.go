package swarm

// Peer exchange: telling connected peers of the others, newcomers in
// batches.

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/wire"
)

// sendPEXLocked tells c about the other peers of the swarm.
func (s *Swarm) sendPEXLocked(c *conn) {
	var list [][]byte
	for id := range s.conns {
		if id != c.p {
			b, err := id.Marshal()
			if err == nil {
				list = append(list, b)
			}
		}
		if len(list) == maxPEX {
			break
		}
	}
	if len(list) > 0 {
		c.send(&wire.Message{ID: wire.PEX, Peers: list})
	}
}

// pexBatchDelay is how long newcomers are gathered before the swarm's
// other peers hear of them.
const pexBatchDelay = 100 * time.Millisecond

// flushNewcomers tells every connected peer of the peers that arrived since
// the last batch (each but itself).
func (s *Swarm) flushNewcomers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	news := s.pexNew
	s.pexNew = nil
	if s.ctx.Err() != nil {
		return
	}
	var ids []peer.ID
	var recs [][]byte
	for _, p := range news {
		if s.conns[p] == nil {
			continue // gone already
		}
		if b, err := p.Marshal(); err == nil {
			ids, recs = append(ids, p), append(recs, b)
		}
	}
	for _, o := range s.conns {
		var list [][]byte
		for i, p := range ids {
			if p != o.p && len(list) < maxPEX {
				list = append(list, recs[i])
			}
		}
		if len(list) > 0 {
			o.send(&wire.Message{ID: wire.PEX, Peers: list})
		}
	}
}

package swarm

import (
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Moving off a relay. A swarm connection made through a relay circuit
// (the only way to reach a peer behind a hard NAT, or before a hole punch)
// stays on it even once a direct connection exists, since libp2p only
// picks the best connection for new streams. MoveToDirect opens a new
// stream, which takes the direct connection, and lets the usual rule for
// two streams between one pair (keep the one the smaller peer ID opened)
// replace the relayed one on both sides. So only the smaller ID of the
// pair moves; the other side's call is a no-op.

// MoveToDirect moves every swarm connection with p that rides a relay
// circuit onto a new stream, if this peer's ID is the smaller of the two.
func (m *Manager) MoveToDirect(p peer.ID) {
	if m.h.ID() >= p || !hasDirect(m.h.Network().ConnsToPeer(p)) {
		return // the other side moves; or nothing to move to
	}
	m.mu.Lock()
	swarms := make([]*Swarm, 0, len(m.swarms))
	for _, s := range m.swarms {
		swarms = append(swarms, s)
	}
	m.mu.Unlock()
	for _, s := range swarms {
		s.moveToDirect(p)
	}
}

func (s *Swarm) moveToDirect(p peer.ID) {
	s.mu.Lock()
	c := s.conns[p]
	move := c != nil && onCircuit(c.st) && !s.dialing[p] && s.ctx.Err() == nil
	if move {
		s.log.Info("moving a swarm connection off its relay", "peer", p)
		s.dialNowLocked(p)
	}
	s.mu.Unlock()
}

// onCircuit says whether st rides a relay circuit.
func onCircuit(st network.Stream) bool {
	_, err := st.Conn().RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// hasDirect says whether one of conns is direct and not limited.
func hasDirect(conns []network.Conn) bool {
	for _, c := range conns {
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil && !c.Stat().Limited {
			return true
		}
	}
	return false
}

package p2phost

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// CutGater is a connection gater for tests and benches that cuts a host off
// from chosen peers: it refuses new connections with them, both ways. (It
// leaves open connections alone; close them to finish the cut.)
type CutGater struct {
	mu  sync.Mutex
	cut map[peer.ID]bool
}

var _ connmgr.ConnectionGater = (*CutGater)(nil)

// Cut cuts the link with p (cut true) or heals it.
func (g *CutGater) Cut(p peer.ID, cut bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cut == nil {
		g.cut = map[peer.ID]bool{}
	}
	g.cut[p] = cut
}

func (g *CutGater) allowed(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.cut[p]
}

func (g *CutGater) InterceptPeerDial(p peer.ID) bool                 { return g.allowed(p) }
func (g *CutGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allowed(p) }
func (g *CutGater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *CutGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g *CutGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

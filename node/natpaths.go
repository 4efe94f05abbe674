package node

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/overlay"
)

// relayPaths is the NAT layer's path provider for OpenStream: a circuit
// through one of the supernodes a NATed peer advertises. The direct path
// already dials every known address, circuits included, so this is the
// fallback that names its relay and tries each one on its own, once the
// direct path and RON's intermediaries have failed. (A punched connection
// needs no provider of its own: it is a direct connection, which libp2p
// prefers to a circuit for every new stream.)
type relayPaths struct{ n *Node }

var _ overlay.PathProvider = relayPaths{}

func (relayPaths) Name() string { return "relay" }

func (relayPaths) Paths(peer.ID, overlay.Class) []overlay.Path { return nil }

func (rp relayPaths) Fallbacks(p peer.ID, _ overlay.Class, tried map[peer.ID]bool) []overlay.Path {
	h := rp.n.host
	byRelay := map[peer.ID][]ma.Multiaddr{}
	var order []peer.ID
	for _, a := range h.Peerstore().Addrs(p) {
		relay, ok := circuitRelay(a)
		if !ok || relay == h.ID() || tried[relay] {
			continue
		}
		if byRelay[relay] == nil {
			order = append(order, relay)
		}
		byRelay[relay] = append(byRelay[relay], a)
	}
	var out []overlay.Path
	for _, relay := range order {
		addrs := byRelay[relay]
		out = append(out, overlay.Path{Kind: "relay", Via: relay, Rank: overlay.RankNormal,
			Open: func(ctx context.Context, proto protocol.ID) (network.Stream, error) {
				if err := h.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs}); err != nil {
					return nil, fmt.Errorf("circuit via %s: %w", relay, err)
				}
				s, err := h.NewStream(network.WithAllowLimitedConn(ctx, "relay path"), p, proto)
				if err != nil {
					return nil, fmt.Errorf("circuit via %s: %w", relay, err)
				}
				return s, nil
			}})
	}
	return out
}

// circuitRelay reads the relay of a circuit address
// (/.../p2p/RELAY/p2p-circuit...).
func circuitRelay(a ma.Multiaddr) (peer.ID, bool) {
	var relay peer.ID
	found := false
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_P2P:
			if !found {
				if id, err := peer.IDFromBytes(c.RawValue()); err == nil {
					relay = id
				}
			}
		case ma.P_CIRCUIT:
			found = true
		}
	}
	return relay, found && relay != ""
}

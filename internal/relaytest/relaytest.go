// Package relaytest builds, for tests, two libp2p hosts on loopback that
// reach each other only through a circuit relay v2 (the project's own
// nat.RelayService) until the test lets them connect directly: the
// situation of two NATed peers before a hole punch.
package relaytest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	lpswarm "github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/nat"
)

// directOnly is a CutGater for direct connections only: a cut peer is still
// reachable through a relay circuit. (A plain CutGater refuses the peer in
// InterceptPeerDial, which circuit dials go through too.) Only loopback
// and circuit addresses are dialled at all.
type directOnly struct{ p2phost.CutGater }

// IsCircuit says whether a is a relay circuit address.
func IsCircuit(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func (*directOnly) InterceptPeerDial(peer.ID) bool { return true } // the addresses decide
func (g *directOnly) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return IsCircuit(a) || (manet.IsIPLoopback(a) && g.CutGater.InterceptAddrDial(p, a))
}
func (g *directOnly) InterceptSecured(d network.Direction, p peer.ID, cm network.ConnMultiaddrs) bool {
	return IsCircuit(cm.RemoteMultiaddr()) || g.CutGater.InterceptSecured(d, p, cm)
}

func gatedHost(t testing.TB, g *directOnly) host.Host {
	t.Helper()
	h, err := libp2p.New(append(p2phost.Options(), libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.ConnectionGater(g))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2phost.Close(h, 5*time.Second) })
	return h
}

// Pair starts a relay R and hosts A and B that are cut off from each
// other directly and connected through a circuit via R (A dialled it). heal
// lifts the cut and connects A to B directly.
func Pair(t testing.TB) (a, b host.Host, heal func()) {
	t.Helper()
	ga, gb := &directOnly{}, &directOnly{}
	r, a, b := gatedHost(t, &directOnly{}), gatedHost(t, ga), gatedHost(t, gb)
	ga.Cut(b.ID(), true)
	gb.Cut(a.ID(), true)
	svc := nat.NewRelayService(r, func(p peer.ID) bool { return p == a.ID() || p == b.ID() }, slog.New(slog.DiscardHandler))
	if err := svc.SetOn(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rInfo := peer.AddrInfo{ID: r.ID(), Addrs: r.Network().ListenAddresses()}
	if _, err := client.Reserve(ctx, b, rInfo); err != nil {
		t.Fatalf("B reserves on the relay: %v", err)
	}
	if err := a.Connect(ctx, rInfo); err != nil {
		t.Fatal(err)
	}
	circuit := ma.StringCast("/p2p/" + r.ID().String() + "/p2p-circuit")
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: []ma.Multiaddr{circuit}}); err != nil {
		t.Fatalf("A reaches B through the relay: %v", err)
	}
	for _, h := range []host.Host{a, b} {
		other := a.ID()
		if h == a {
			other = b.ID()
		}
		cs := h.Network().ConnsToPeer(other)
		if len(cs) != 1 || !IsCircuit(cs[0].RemoteMultiaddr()) || cs[0].Stat().Limited {
			t.Fatalf("%s has %d conns to its peer (%v); want one unlimited circuit", h.ID(), len(cs), cs)
		}
	}
	heal = func() {
		t.Helper()
		ga.Cut(b.ID(), false)
		gb.Cut(a.ID(), false)
		a.Network().(*lpswarm.Swarm).Backoff().Clear(b.ID())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Connect is a no-op for a peer already connected (by the
		// circuit) unless a direct dial is forced.
		ctx = network.WithForceDirectDial(ctx, "test: heal the cut")
		if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Network().ListenAddresses()}); err != nil {
			t.Fatalf("connect A to B directly: %v", err)
		}
	}
	return a, b, heal
}

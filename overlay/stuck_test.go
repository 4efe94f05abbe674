package overlay

import (
	"fmt"
	"net"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/internal/p2phost"
)

// A peer known only by circuit addresses is not "reachable by a fresh
// handshake": the handshake would reach its relay, and a cut link to a
// NATed peer would look healed, which closed its working connections.
func TestHandshakesSkipCircuits(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	h := newTestHost(t)
	relay, target := newTestHost(t).ID(), newTestHost(t).ID()
	r := &Router{h: h}
	circuit := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s/p2p-circuit", port, relay))
	h.Peerstore().AddAddrs(target, []ma.Multiaddr{circuit}, time.Hour)
	if r.handshakes(target) {
		t.Fatal("a handshake with the relay counted as one with the peer behind it")
	}
	h.Peerstore().AddAddrs(target, []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))}, time.Hour)
	if !r.handshakes(target) {
		t.Fatal("a handshake with the peer's own address did not count")
	}
}

// Only connections opened before the peer went silent count as stuck: a
// connection opened since (a hole punch that upgraded a relayed pair, say)
// is left alone.
func TestOnlyConnectionsOlderThanTheSilenceAreStale(t *testing.T) {
	hosts, err := p2phost.Loopback(2, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer p2phost.CloseAll(hosts, 5*time.Second)
	before := time.Now()
	if err := p2phost.ConnectAll(hosts); err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Millisecond)
	conns := hosts[0].Network().ConnsToPeer(hosts[1].ID())
	if len(conns) == 0 {
		t.Fatal("no connection")
	}
	if got := staleConns(conns, before); len(got) != 0 {
		t.Fatalf("a connection opened after the silence began counts as stale: %v", got)
	}
	if got := staleConns(conns, after); len(got) != len(conns) {
		t.Fatalf("%d of %d connections opened before the silence count as stale", len(got), len(conns))
	}
}

package overlay

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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

// No connection is closed as stuck while this peer is itself short of
// CPU, and a peer's are not closed again and again.
func TestStuckChecksWaitOutOwnLagAndBackOff(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b := peer.ID("a"), peer.ID("b")
	heard := map[peer.ID]time.Time{}
	last := map[peer.ID]stuckClose{}
	var never time.Time

	if due, starved := stuckDue(now, []peer.ID{a, b}, never, last, heard); starved || len(due) != 2 {
		t.Fatalf("no lag, no earlier close: due %v, starved %v", due, starved)
	}
	// Our own tick was late 2 s ago: nothing is checked.
	if due, starved := stuckDue(now, []peer.ID{a, b}, now.Add(-2*time.Second), last, heard); !starved || len(due) != 0 {
		t.Fatalf("lagged 2 s ago: due %v, starved %v", due, starved)
	}
	if due, _ := stuckDue(now, []peer.ID{a, b}, now.Add(-selfLagHold), last, heard); len(due) != 2 {
		t.Fatalf("lagged %v ago: due %v", selfLagHold, due)
	}

	// a was closed 10 s ago: not again before stuckRecloseAfter.
	last[a] = stuckClose{at: now.Add(-10 * time.Second)}
	if due, _ := stuckDue(now, []peer.ID{a}, never, last, heard); len(due) != 0 {
		t.Fatalf("closed 10 s ago, due again: %v", due)
	}
	if due, _ := stuckDue(now.Add(stuckRecloseAfter), []peer.ID{a}, never, last, heard); len(due) != 1 {
		t.Fatalf("closed %v ago, not due: %v", stuckRecloseAfter+10*time.Second, due)
	}
	// Closed three times in a row without being heard in between: the
	// wait has doubled three times.
	last[a] = stuckClose{at: now, unheal: 3}
	if due, _ := stuckDue(now.Add(3*stuckRecloseAfter), []peer.ID{a}, never, last, heard); len(due) != 0 {
		t.Fatalf("after 3 closes that did not help, due again after %v: %v", 3*stuckRecloseAfter, due)
	}
	if due, _ := stuckDue(now.Add(stuckRecloseMax), []peer.ID{a}, never, last, heard); len(due) != 1 {
		t.Fatalf("not due after the most the wait can be (%v): %v", stuckRecloseMax, due)
	}
	// Heard since the close (the close mended it): the short wait again.
	heard[a] = now.Add(time.Second)
	if due, _ := stuckDue(now.Add(stuckRecloseAfter), []peer.ID{a}, never, last, heard); len(due) != 1 {
		t.Fatalf("heard since the last close, yet not due after %v: %v", stuckRecloseAfter, due)
	}
}

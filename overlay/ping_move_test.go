package overlay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/relaytest"
	"github.com/peer-overlay/peer/internal/testwait"
)

// pingStreams counts h's open ping streams to p on circuits and on direct
// connections.
func pingStreams(h host.Host, p peer.ID) (circuit, direct int) {
	for _, c := range h.Network().ConnsToPeer(p) {
		for _, s := range c.GetStreams() {
			if s.Protocol() != PingProtocol {
				continue
			}
			if relaytest.IsCircuit(c.RemoteMultiaddr()) {
				circuit++
			} else {
				direct++
			}
		}
	}
	return circuit, direct
}

// A ping session's kept stream, opened on a relay circuit because that was
// the only connection, moves to the direct connection once one exists: the
// next ping goes on a second stream, on the direct connection, with no
// failed ping in between.
func TestPingSessionMovesOffRelay(t *testing.T) {
	a, b, heal := relaytest.Pair(t)
	if HasDirect(a, b.ID()) {
		t.Fatal("A has a direct connection to B through the cut")
	}

	oa := New(a, nil, nil)
	New(b, nil, nil).ServePing()
	var (
		mu     sync.Mutex
		events []PingEvent
	)
	snapshot := func() []PingEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]PingEvent(nil), events...)
	}
	// check fails for good on a failed ping or a stream number that is not
	// the last one or the next.
	check := func(evs []PingEvent) error {
		for i, ev := range evs {
			prev := 0 // the first ping is on stream 1
			if i > 0 {
				prev = evs[i-1].Stream
			}
			if ev.Error != "" || ev.Stream < max(prev, 1) || ev.Stream > prev+1 || ev.Stream > 2 {
				return testwait.Permanent{Err: fmt.Errorf("ping %d of %d: %+v", i+1, len(evs), ev)}
			}
		}
		return nil
	}
	sctx, stop := context.WithTimeout(context.Background(), 9*time.Second)
	defer stop()
	var sessErr error
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sessErr = oa.PingSession(sctx, b.ID(), 1000, 50*time.Millisecond, 2*time.Second, func(ev PingEvent) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		})
	}()
	defer func() {
		stop()
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Error("the ping session did not end when cancelled")
		}
	}()

	// A few pings on the first stream, which is the circuit's.
	testwait.Until(t, 5*time.Second, func() error {
		evs := snapshot()
		if err := check(evs); err != nil {
			return err
		}
		if len(evs) < 3 {
			return fmt.Errorf("%d pings so far", len(evs))
		}
		if evs[len(evs)-1].Stream != 1 {
			return testwait.Permanent{Err: fmt.Errorf("stream %d before the cut healed", evs[len(evs)-1].Stream)}
		}
		return nil
	})
	if c, d := pingStreams(a, b.ID()); c != 1 || d != 0 {
		t.Fatalf("A has %d ping streams on the circuit and %d direct; want the session's one on the circuit", c, d)
	}
	before := len(snapshot())
	circ := a.Network().ConnsToPeer(b.ID())[0]

	heal()
	if !HasDirect(a, b.ID()) {
		t.Fatal("no direct connection after connecting directly")
	}

	testwait.Until(t, 5*time.Second, func() error {
		evs := snapshot()
		if err := check(evs); err != nil {
			return err
		}
		n := 0
		for _, ev := range evs {
			if ev.Stream == 2 {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d pings on a second stream so far", n)
		}
		if c, d := pingStreams(a, b.ID()); c != 0 || d != 1 {
			return fmt.Errorf("A has %d ping streams on the circuit and %d direct; want the session's one direct", c, d)
		}
		return nil
	})
	stop()
	<-ended
	if !errors.Is(sessErr, context.Canceled) {
		t.Fatalf("the session ended with %v, want it cancelled", sessErr)
	}
	evs := snapshot()
	if evs[before-1].Stream != 1 {
		t.Fatalf("the stream changed before the direct connection came: %+v", evs[:before])
	}
	if !HasDirect(a, b.ID()) {
		t.Fatal("the direct connection is gone")
	}
	if !relaytest.IsCircuit(circ.RemoteMultiaddr()) || circ.IsClosed() {
		t.Fatal("the circuit closed: the move was not what took the session off it")
	}
}

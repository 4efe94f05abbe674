//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
)

// testbedCluster starts n peers, each in its own host namespace of a fresh
// testbed, or skips, loudly, when the testbed cannot be built here.
func testbedCluster(t *testing.T, n int) (*netns.Testbed, *Cluster) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("SKIPPING: the network-namespace testbed needs root, ip and iptables: %v", err)
	}
	tb, err := netns.New("ron", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("testbed cleanup: %v", err)
		}
	})
	hosts := tb.Hosts()
	c := newCluster(t, n, func(i int, p *Peer) {
		p.netns, p.ip = hosts[i].Name, hosts[i].Addr.String()
	})
	return tb, c
}

func routeTo(t *testing.T, from *Peer, to string) (overlay.RouteInfo, error) {
	t.Helper()
	cl, err := from.api()
	if err != nil {
		return overlay.RouteInfo{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := cl.Routes(ctx)
	if err != nil {
		return overlay.RouteInfo{}, err
	}
	for _, ri := range r.Routes {
		if ri.Peer.String() == to {
			return ri, nil
		}
	}
	return overlay.RouteInfo{}, fmt.Errorf("%s has no route to %s yet", from.Name, to)
}

// Four hosts; the link between A and C is cut in the router. A keeps
// reaching C through another host: a stream open before the cut is
// replaced by one through an intermediate, path choice moves A's routes to
// C there, and Chord lookups keep succeeding, C's own ID included. Once
// the link heals, A's routes and new streams return to the direct path.
func TestTestbedCutRoutesAroundAndHeals(t *testing.T) {
	tb, c := testbedCluster(t, 4)
	a, cc := c.Peers[0], c.Peers[2]
	cID, err := peer.Decode(cc.ID)
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		ri, err := routeTo(t, a, cc.ID)
		if err != nil {
			return err
		}
		if ri.Direct.RTTms <= 0 || ri.Paths < 2 || ri.Best.Latency.Via != "" {
			return fmt.Errorf("route from A to C not settled: %+v", ri)
		}
		return nil
	})
	// The lookups during the cut expect C in A's ring: wait for the ring
	// to converge first (routes may settle sooner).
	Eventually(t, 30*time.Second, 200*time.Millisecond, idealRing(c.Peers))
	aAPI, _ := a.api()
	cAPI, _ := cc.api()
	ring, err := cAPI.Ring(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	// A long-lived stream from A to C: a ping every 100 ms on one stream.
	var mu sync.Mutex
	var events []overlay.PingEvent
	sessionDone := make(chan error, 1)
	go func() {
		req := node.PingSessionRequest{Peer: cID, Count: 120, Interval: 100 * time.Millisecond, Timeout: 300 * time.Millisecond}
		sessionDone <- aAPI.PingSession(context.Background(), req, func(ev overlay.PingEvent) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		})
	}()
	answeredVia := func(after time.Time) (overlay.PingEvent, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range events {
			if time.UnixMilli(ev.AtMs).After(after) && ev.Error == "" && ev.Via != "" {
				return ev, true
			}
		}
		return overlay.PingEvent{}, false
	}
	Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(events) < 5 {
			return fmt.Errorf("%d pings so far", len(events))
		}
		return nil
	})
	if err := tb.Cut(0, 2); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()

	Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		ri, err := routeTo(t, a, cc.ID)
		if err != nil {
			return err
		}
		if !ri.Direct.Down {
			return fmt.Errorf("A has not seen its link to C go down: %+v", ri.Direct)
		}
		for _, p := range []overlay.PathInfo{ri.Best.Latency, ri.Best.Loss, ri.Best.Throughput} {
			if !p.OK || p.Via == "" || p.Via.String() == a.ID || p.Via.String() == cc.ID {
				return fmt.Errorf("A's routes to C after the cut: %+v", ri.Best)
			}
		}
		return nil
	})
	t.Logf("A's routes to C moved to an intermediate %.1f s after the cut", time.Since(cutAt).Seconds())

	// Chord keeps working across the cut, for C's own ID too.
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := aAPI.Lookup(ctx, node.LookupRequest{Key: fmt.Sprintf("key-%d", i)})
		cancel()
		if err != nil {
			t.Fatalf("lookup %d from A during the cut: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	li, err := aAPI.Lookup(ctx, node.LookupRequest{ChordID: ring.ChordID})
	cancel()
	if err != nil {
		t.Fatalf("lookup of C's ID from A during the cut: %v", err)
	}
	if li.Owner.ID != cc.ID {
		t.Fatalf("lookup of C's ID from A during the cut found %s, want C", li.Owner.ID)
	}

	// The kept stream was replaced by one through an intermediate, and
	// pings flowed on it while the link was cut.
	var flowed overlay.PingEvent
	Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		var ok bool
		if flowed, ok = answeredVia(cutAt); !ok {
			return errors.New("no ping answered through an intermediate since the cut")
		}
		return nil
	})
	mu.Lock()
	first := events[0]
	mu.Unlock()
	if first.Error != "" || first.Via != "" || first.Stream != 1 {
		t.Fatalf("first ping before the cut: %+v, want answered directly on stream 1", first)
	}
	if flowed.Stream < 2 {
		t.Fatalf("ping through an intermediate on stream %d: the kept stream was not replaced", flowed.Stream)
	}
	t.Logf("the kept stream flowed again on stream %d via %s %.2f s after the cut",
		flowed.Stream, flowed.Via, time.UnixMilli(flowed.AtMs).Sub(cutAt).Seconds())

	if err := tb.Heal(0, 2); err != nil {
		t.Fatal(err)
	}
	healAt := time.Now()
	Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		ri, err := routeTo(t, a, cc.ID)
		if err != nil {
			return err
		}
		for _, p := range []overlay.PathInfo{ri.Best.Latency, ri.Best.Loss, ri.Best.Throughput} {
			if !p.OK || p.Via != "" {
				return fmt.Errorf("A's routes to C after the heal: %+v", ri.Best)
			}
		}
		return nil
	})
	t.Logf("A's routes to C returned to the direct path %.1f s after the heal", time.Since(healAt).Seconds())
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	res, err := aAPI.Ping(ctx, cID, 5*time.Second)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != "" {
		t.Fatalf("a new stream after the heal went via %s", res.Via)
	}
	if err := <-sessionDone; err != nil {
		t.Fatalf("ping session: %v", err)
	}
}

// Package ronbench holds the in-process RON benches behind `peer bench
// ron`: the probe overhead of a group on loopback, and failover through a
// user-space fault shim. They use only the overlay's exported API.
package ronbench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/overlay"
)

// benchGroup is n in-process members on loopback, each with a router and
// a gater that can cut it off from chosen peers.
type benchGroup struct {
	hosts   []host.Host
	members []*overlay.Membership
	routers []*overlay.Router
	gaters  []*p2phost.CutGater
}

func (g *benchGroup) close() {
	for i := range g.hosts {
		g.routers[i].Close()
		_ = g.members[i].Close()
		_ = g.hosts[i].Close()
	}
}

func startBenchGroup(ctx context.Context, n int, progress func(string)) (*benchGroup, error) {
	g := &benchGroup{}
	for range n {
		gt := &p2phost.CutGater{}
		h, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.ConnectionGater(gt), libp2p.ResourceManager(&network.NullResourceManager{}))...)
		if err != nil {
			g.close()
			return nil, err
		}
		m, err := overlay.NewMembership(h, overlay.MembershipConfig{})
		if err != nil {
			_ = h.Close()
			g.close()
			return nil, err
		}
		g.hosts, g.members, g.gaters = append(g.hosts, h), append(g.members, m), append(g.gaters, gt)
		g.routers = append(g.routers, overlay.NewRouter(h, m, overlay.RouterConfig{}))
	}
	boot := []peer.AddrInfo{{ID: g.hosts[0].ID(), Addrs: g.hosts[0].Addrs()}}
	for _, m := range g.members[1:] {
		if _, err := m.Join(ctx, boot); err != nil {
			g.close()
			return nil, err
		}
	}
	// Settled: every router measures every other member and has a usable
	// route to each.
	for {
		ready := 0
		for _, r := range g.routers {
			ok := true
			for _, ri := range r.Routes() {
				ok = ok && ri.Direct.RTTms > 0 && ri.Best.Loss.OK
			}
			if ok && len(r.Routes()) == n-1 {
				ready++
			}
		}
		if ready == n {
			return g, nil
		}
		if progress != nil {
			progress(fmt.Sprintf("ron bench: %d of %d members settled", ready, n))
		}
		select {
		case <-ctx.Done():
			g.close()
			return nil, fmt.Errorf("group of %d did not settle: %w", n, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Overhead starts a group of n members on loopback, waits until their
// routes settle, and measures what their routers send (probes, answers and
// rows, with per-message framing) over window: bits per second per peer.
func Overhead(ctx context.Context, n int, window time.Duration, progress func(string)) (float64, error) {
	if n < 2 {
		return 0, fmt.Errorf("a group needs 2 members or more, not %d", n)
	}
	g, err := startBenchGroup(ctx, n, progress)
	if err != nil {
		return 0, err
	}
	defer g.close()
	before := make([]int64, n)
	for i, r := range g.routers {
		before[i], _ = r.Overhead()
	}
	start := time.Now()
	if progress != nil {
		progress(fmt.Sprintf("ron bench: measuring %d members for %v", n, window))
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(window):
	}
	el := time.Since(start).Seconds()
	var sum int64
	for i, r := range g.routers {
		b, _ := r.Overhead()
		sum += b - before[i]
	}
	return float64(sum) * 8 / el / float64(n), nil
}

// FailoverShim measures failover on loopback with a user-space fault
// shim instead of a namespace testbed: a group of n members, and cuts times
// a cut between member 0 and a fresh destination each time, through the
// members' connection gaters (new connections refused, the open one
// closed). A kept stream pings the destination every interval; failover is
// the time from the cut until a ping is answered again. Unlike a cut in the
// router of a testbed, which drops packets silently, the shim's closed
// connection is noticed at once, so this is a lower bound.
func FailoverShim(ctx context.Context, n, cuts int, interval time.Duration, progress func(string)) ([]float64, error) {
	if cuts > n-2 {
		return nil, fmt.Errorf("%d cuts need %d members or more", cuts, cuts+2)
	}
	g, err := startBenchGroup(ctx, n, progress)
	if err != nil {
		return nil, err
	}
	defer g.close()
	for _, h := range g.hosts {
		ov := overlay.New(h, nil, nil)
		ov.ServePing()
	}
	a := g.hosts[0]
	ov := overlay.New(a, nil, g.routers[0])
	var out []float64
	for i := range cuts {
		dst := g.hosts[i+1]
		sec, err := failoverOnce(ctx, ov, dst.ID(), interval, func() {
			g.gaters[0].Cut(dst.ID(), true)
			g.gaters[i+1].Cut(a.ID(), true)
			_ = a.Network().ClosePeer(dst.ID())
		})
		if err != nil {
			return out, err
		}
		out = append(out, sec)
		if progress != nil {
			progress(fmt.Sprintf("ron bench: cut %d of %d: traffic flowed again after %.2f s", i+1, cuts, sec))
		}
	}
	return out, nil
}

// failoverOnce pings p on a kept stream, calls cut, and returns the time
// from the cut until a ping is answered again.
func failoverOnce(ctx context.Context, ov *overlay.Overlay, p peer.ID, interval time.Duration, cut func()) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var cutAt time.Time
	answered := make(chan time.Time, 1)
	warm := make(chan struct{})
	go func() {
		ok := 0
		_ = ov.PingSession(ctx, p, 1<<20, interval, 3*interval+100*time.Millisecond, func(ev overlay.PingEvent) {
			if ev.Error != "" {
				return
			}
			if ok++; ok == 3 {
				close(warm)
			}
			mu.Lock()
			c := cutAt
			mu.Unlock()
			if !c.IsZero() && time.UnixMilli(ev.AtMs).After(c) {
				select {
				case answered <- time.Now():
				default:
				}
			}
		})
	}()
	select {
	case <-warm:
	case <-ctx.Done():
		return 0, fmt.Errorf("no pings answered before the cut: %w", ctx.Err())
	}
	cut()
	mu.Lock()
	cutAt = time.Now()
	mu.Unlock()
	select {
	case t := <-answered:
		return t.Sub(cutAt).Seconds(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("traffic did not flow again within 30 s of the cut")
	}
}

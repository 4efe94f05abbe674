//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
)

func testbedAvailable() error { return netns.Available() }

// failoverNetns runs cuts+2 peers, one per host of a fresh testbed, and
// measures failover from peer 0 to a fresh peer at each cut; each cut is
// held for cutFor, then healed, and the time until traffic is back on the
// direct path is measured too.
func failoverNetns(ctx context.Context, cuts int, cutFor time.Duration, progress func(string)) (out, heals []float64, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	n := cuts + 2
	tb, err := netns.New("rb", n)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if cerr := tb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	dir, err := os.MkdirTemp("", "peer-bench-ron-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	hosts := tb.Hosts()
	f := &devnetFlags{logLevel: "warn", transport: "tcp",
		listenIP: func(i int) string { return hosts[i].Addr.String() },
		wrap:     func(i int) []string { return []string{"ip", "netns", "exec", hosts[i].Name} },
	}
	progress(fmt.Sprintf("ron bench: starting %d peers in a namespace testbed", n))
	peers, _, err := startCluster(ctx, exe, dir, n, f)
	defer stopPeers(peers)
	if err != nil {
		return nil, nil, err
	}
	a := peers[0]
	// Settled: peer 0 measures every other member and knows each one's
	// one-hop paths.
	for deadline := time.Now().Add(30 * time.Second); ; {
		r, err := a.client.Routes(ctx)
		settled := err == nil && len(r.Routes) == n-1
		for _, ri := range r.Routes {
			settled = settled && ri.Direct.RTTms > 0 && ri.Paths == n-2
		}
		if settled {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("routes did not settle within 30 s (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range cuts {
		j := i + 1
		id, err := peer.Decode(peers[j].id)
		if err != nil {
			return out, heals, err
		}
		cutAt := time.Now()
		sec, err := sessionFailover(ctx, a.client, id, func() error { cutAt = time.Now(); return tb.Cut(0, j) })
		if err == nil {
			time.Sleep(time.Until(cutAt.Add(cutFor)))
		}
		if herr := tb.Heal(0, j); herr != nil && err == nil {
			err = herr
		}
		if err != nil {
			return out, heals, err
		}
		out = append(out, sec)
		back, err := healReturn(ctx, a.client, id)
		if err != nil {
			return out, heals, err
		}
		heals = append(heals, back)
		progress(fmt.Sprintf("ron bench: cut %d of %d: traffic flowed again %.2f s after the cut; held %s, back on the direct path %.2f s after the heal",
			i+1, cuts, sec, cutFor, back))
	}
	return out, heals, nil
}

// healReturn polls until the peer behind c routes to p directly for every
// metric and a new stream to p goes direct, and returns how long that took.
func healReturn(ctx context.Context, c *node.Client, p peer.ID) (float64, error) {
	start := time.Now()
	for deadline := start.Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r, err := c.Routes(ctx)
		if err != nil {
			continue
		}
		direct := false
		for _, ri := range r.Routes {
			if ri.Peer == p {
				direct = ri.Best.Latency.OK && ri.Best.Latency.Via == "" && ri.Best.Loss.OK && ri.Best.Loss.Via == "" &&
					ri.Best.Throughput.OK && ri.Best.Throughput.Via == ""
			}
		}
		if !direct {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		res, err := c.Ping(pctx, p, time.Second)
		cancel()
		if err == nil && res.Via == "" {
			return time.Since(start).Seconds(), nil
		}
	}
	return 0, fmt.Errorf("traffic to %s was not back on the direct path within 90 s of the heal", p)
}

//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
)

func testbedAvailable() error { return netns.Available() }

// failoverNetns runs cuts+2 peers, one per host of a fresh testbed, and
// measures failover from peer 0 to a fresh peer at each cut.
func failoverNetns(ctx context.Context, cuts int, progress func(string)) (out []float64, err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	n := cuts + 2
	tb, err := netns.New("rb", n)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := tb.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	dir, err := os.MkdirTemp("", "peer-bench-ron-")
	if err != nil {
		return nil, err
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
		return nil, err
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
			return nil, fmt.Errorf("routes did not settle within 30 s (%v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range cuts {
		j := i + 1
		id, err := peer.Decode(peers[j].id)
		if err != nil {
			return out, err
		}
		sec, err := sessionFailover(ctx, a.client, id, func() error { return tb.Cut(0, j) })
		if herr := tb.Heal(0, j); herr != nil && err == nil {
			err = herr
		}
		if err != nil {
			return out, err
		}
		out = append(out, sec)
		progress(fmt.Sprintf("ron bench: cut %d of %d: traffic flowed again %.2f s after the cut", i+1, cuts, sec))
	}
	return out, nil
}

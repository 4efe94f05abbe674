package integration

import (
	"context"
	"flag"
	"fmt"
	"testing"

	"github.com/peer-overlay/peer/node"
)

var namesFigures = flag.Bool("names.figures", false,
	"TestNamesFigures on 32 peers with 40 names instead of 8 with 10")

// Name resolution figures on a cluster of 32 real peers: one peer claims
// 40 names; every other peer resolves each of them twice, the first time
// from the ring (the first valid answer of a replica) and the second from
// its cache. The latencies are the daemons' own (latency_ms), without the
// CLI's start-up. A claim returns once the replicas have stored it, so its
// latency is how long an update takes to be on all of them.
func TestNamesFigures(t *testing.T) {
	peers, count := 8, 10 // every peer resolves every name; -names.figures for the figure
	if *namesFigures {
		peers, count = 32, 40
	}
	c := NewCluster(t, peers)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))
	ctx := context.Background()
	owner, err := c.Peers[0].api()
	if err != nil {
		t.Fatal(err)
	}
	var claims, cold, warm []float64
	for i := range count {
		r, err := owner.ClaimName(ctx, node.NameRequest{Name: fmt.Sprintf("svc-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, r.LatencyMs)
	}
	for _, p := range c.Peers[1:] {
		api, err := p.api()
		if err != nil {
			t.Fatal(err)
		}
		for i := range count {
			name := fmt.Sprintf("svc-%d", i)
			for pass := range 2 {
				r, err := api.ResolveName(ctx, name)
				if err != nil {
					t.Fatalf("%s: resolve %s: %v", p.Name, name, err)
				}
				if pass == 0 {
					cold = append(cold, r.LatencyMs)
				} else {
					warm = append(warm, r.LatencyMs)
				}
			}
		}
	}
	figure(t, "name_resolve_ring_ms", fmt.Sprintf("p50 %.2f / p99 %.2f", quantile(cold, 0.5), quantile(cold, 0.99)), fmt.Sprintf("%d first resolutions on %d peers", len(cold), peers-1))
	figure(t, "name_resolve_cached_ms", fmt.Sprintf("p50 %.3f / p99 %.3f", quantile(warm, 0.5), quantile(warm, 0.99)), fmt.Sprintf("%d repeated resolutions", len(warm)))
	figure(t, "name_claim_on_all_replicas_ms", fmt.Sprintf("p50 %.2f / p99 %.2f", quantile(claims, 0.5), quantile(claims, 0.99)), fmt.Sprintf("%d claims, each returned once its 8 replicas stored it", len(claims)))
}

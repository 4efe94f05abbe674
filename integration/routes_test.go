package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Every peer of a group measures its direct link to every other member and
// learns every other member's row, so that each destination has a direct
// path and a one-hop path through each other member; with all links up,
// every chosen route is usable.
func TestRoutesSettle(t *testing.T) {
	const n = 8
	c := NewCluster(t, n)
	start := time.Now()
	Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, p := range c.Peers {
			cl, err := p.api()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := cl.Routes(ctx)
			cancel()
			if err != nil {
				return err
			}
			if len(r.Routes) != n-1 {
				return fmt.Errorf("%s routes to %d members, want %d", p.Name, len(r.Routes), n-1)
			}
			for _, ri := range r.Routes {
				if ri.Direct.RTTms <= 0 || ri.Direct.Down {
					return fmt.Errorf("%s has no measurement of its link to %s: %+v", p.Name, ri.Peer, ri.Direct)
				}
				if ri.Paths != n-2 {
					return fmt.Errorf("%s knows %d one-hop paths to %s, want %d", p.Name, ri.Paths, ri.Peer, n-2)
				}
				if !ri.Best.Latency.OK || !ri.Best.Loss.OK || !ri.Best.Throughput.OK {
					return fmt.Errorf("%s has an unusable route to %s: %+v", p.Name, ri.Peer, ri.Best)
				}
			}
		}
		return nil
	})
	t.Logf("routes settled on all %d peers %.1f s after the last peer answered", n, time.Since(start).Seconds())
}

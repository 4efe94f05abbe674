package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/node"
)

// idealRing checks that every live peer's successor list holds the next
// live peers clockwise by Chord ID, as many as the ring has (up to 8): the
// first successor is what the issue checks, and the whole list is what a
// put needs to reach all of its replicas.
func idealRing(peers []*Peer) func() error {
	return func() error {
		type pos struct {
			p   *Peer
			cid chord.ID
		}
		var ring []pos
		for _, p := range peers {
			info, err := p.IDInfo()
			if err != nil {
				return err
			}
			id, err := peer.Decode(info.ID)
			if err != nil {
				return permanentError{err}
			}
			ring = append(ring, pos{p, chord.HashID([]byte(id))})
		}
		slices.SortFunc(ring, func(a, b pos) int { return a.cid.Cmp(b.cid) })
		for i, x := range ring {
			c, err := x.p.api()
			if err != nil {
				return err
			}
			r, err := c.Ring(context.Background())
			if err != nil {
				return err
			}
			for j := 1; j <= min(8, len(ring)-1); j++ {
				want := ring[(i+j)%len(ring)].cid.String()
				if len(r.Successors) < j || r.Successors[j-1].ChordID != want {
					return fmt.Errorf("%s: successor %d is not %s: %v", x.p.Name, j, want[:8], r.Successors)
				}
			}
		}
		return nil
	}
}

// Twelve peers form the ideal ring; records put through one peer are read
// through another; then R-1 = 7 peers that sit next to each other on the
// ring are killed at once, and every record is still found.
func TestRingRecordsSurviveNeighbourFailures(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 12)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))

	ctx := context.Background()
	writer, err := c.Peers[3].api()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%d", i)
		r, err := writer.Put(ctx, node.PutRequest{Key: keys[i], Value: "value of " + keys[i], TTL: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Replicas != 8 {
			t.Errorf("%s stored on %d replicas, want 8", keys[i], r.Replicas)
		}
	}
	reader, err := c.Peers[9].api()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.KVGet(ctx, "never-put"); err == nil {
		t.Error("a key never put was found")
	}

	// Kill seven consecutive peers on the ring, starting from peer-3's
	// successor list, whatever their order of start.
	rs, err := writer.Ring(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var victims []*Peer
	for _, s := range rs.Successors[:7] {
		for _, p := range c.Peers {
			if info, _ := p.IDInfo(); info.ID == s.ID {
				victims = append(victims, p)
			}
		}
	}
	if len(victims) != 7 {
		t.Fatalf("found %d of 7 neighbours to kill", len(victims))
	}
	for _, v := range victims {
		v.Kill9()
	}
	var alive []*Peer
	for _, p := range c.Peers {
		if !slices.Contains(victims, p) {
			alive = append(alive, p)
		}
	}
	Eventually(t, 2*convergeTimeout, pollInterval, idealRing(alive))
	reader, err = alive[len(alive)-1].api()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	Eventually(t, convergeTimeout, pollInterval, func() error {
		for _, k := range keys {
			g, err := reader.KVGet(ctx, k)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			if g.Value != "value of "+k {
				return permanentError{fmt.Errorf("%s: value %q", k, g.Value)}
			}
		}
		return nil
	})
	t.Logf("all %d records found %.1f s after the ring healed", len(keys), time.Since(start).Seconds())
}

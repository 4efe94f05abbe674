package node

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/distribute"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// The orders a target took survive a restart: what saveLocked writes, load
// reads back, field for field; a file that does not parse is set aside
// without stopping the peer.
func TestSavedOrdersRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), ordersFile)
	newD := func() *distributor {
		return &distributor{log: slog.New(slog.DiscardHandler), path: path, orders: map[meta.InfoHash]*savedOrder{}}
	}
	d := newD()
	h1, h2 := meta.InfoHash{1}, meta.InfoHash{2}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	d.orders[h1] = &savedOrder{InfoHash: h1.String(), From: "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF",
		Job: "1-abcd", Name: "data.bin", Size: 6 << 20, Out: "/h/distributed", Ordered: at, State: distribute.StateFetching}
	d.orders[h2] = &savedOrder{InfoHash: h2.String(), From: "x", Job: "2-ef01", Name: "b", Size: 1, Out: "/o",
		Ordered: at, State: distribute.StateFailed, Reason: "no peer provided it"}
	if err := d.saveLocked(); err != nil {
		t.Fatal(err)
	}
	got := newD()
	if err := got.load(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.orders, d.orders) {
		t.Fatalf("loaded %+v, saved %+v", got.orders, d.orders)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := newD()
	if err := bad.load(); err != nil || len(bad.orders) != 0 {
		t.Fatalf("a corrupt file: err %v, %d orders", err, len(bad.orders))
	}
	none := &distributor{log: slog.New(slog.DiscardHandler), path: filepath.Join(t.TempDir(), ordersFile), orders: map[meta.InfoHash]*savedOrder{}}
	if err := none.load(); err != nil {
		t.Fatalf("no file: %v", err)
	}
}

// An order for more than the disk has free is refused with a reason, and
// leaves nothing behind: no swarm, no saved order.
func TestOrderRefusedWithoutSpace(t *testing.T) {
	n := startTestNode(t, filepath.Join(t.TempDir(), "a"))
	saved := swarm.DiskFree
	swarm.DiskFree = func(string) (int64, error) { return 1 << 20, nil }
	t.Cleanup(func() { swarm.DiskFree = saved })
	var h [20]byte
	h[0] = 7
	rep := n.dist.order(n.ID(), &distribute.Order{Hash: h, Job: "j1", Name: "big.iso", Size: 1 << 30})
	if rep.State != distribute.StateRefused || !strings.Contains(rep.Reason, "not enough disk space") {
		t.Fatalf("reply %+v: want refused for disk space", rep)
	}
	if n.swarms.Swarm(meta.InfoHash(h)) != nil {
		t.Fatal("a swarm was started for a refused order")
	}
	n.dist.mu.Lock()
	kept := n.dist.orders[meta.InfoHash(h)]
	n.dist.mu.Unlock()
	if kept != nil {
		t.Fatal("the refused order was saved")
	}
}

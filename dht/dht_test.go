package dht

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/overlay"
)

type testNode struct {
	ov  *overlay.Overlay
	dht *DHT
}

func newTestNode(t *testing.T, first bool) *testNode {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(append(p2phost.Options(), libp2p.Identity(priv), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := overlay.NewMembership(h, overlay.MembershipConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := record.Open(filepath.Join(t.TempDir(), "dht.db"))
	if err != nil {
		t.Fatal(err)
	}
	ov := overlay.New(h, m, nil)
	d := New(ov, priv, st, !first, Config{})
	t.Cleanup(func() {
		d.Close(false)
		_ = st.Close()
		_ = m.Close()
		_ = h.Close()
	})
	return &testNode{ov: ov, dht: d}
}

// Four peers in one process: they join one ring over real loopback
// streams, a record put through one is read through another, and a key
// never put is reported missing. Run under -race in CI.
func TestBindingRingAndRecords(t *testing.T) {
	nodes := []*testNode{newTestNode(t, true)}
	boot := peer.AddrInfo{ID: nodes[0].ov.Host().ID(), Addrs: nodes[0].ov.Host().Addrs()}
	for range 3 {
		n := newTestNode(t, false)
		if _, err := n.ov.Members().Join(context.Background(), []peer.AddrInfo{boot}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	testwait.Until(t, 30*time.Second, func() error {
		for i, n := range nodes {
			r := n.dht.Ring()
			if !r.Joined || len(r.Successors) != 4 || r.Predecessor.IsZero() {
				return fmt.Errorf("node %d: joined=%v successors=%d", i, r.Joined, len(r.Successors))
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reps, err := nodes[1].dht.Put(ctx, []byte("k"), []byte("v"), time.Minute)
	if err != nil || reps != 4 {
		t.Fatalf("put: %d replicas, %v", reps, err)
	}
	rec, _, err := nodes[3].dht.Get(ctx, []byte("k"))
	if err != nil || string(rec.Value) != "v" {
		t.Fatalf("get: %v %v", rec, err)
	}
	if _, _, err := nodes[2].dht.Get(ctx, []byte("missing")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if _, err := nodes[0].dht.AddProvider(ctx, []byte("infohash"), time.Minute); err != nil {
		t.Fatal(err)
	}
	provs, err := nodes[2].dht.FindProviders(ctx, []byte("infohash"))
	if err != nil || len(provs) != 1 || provs[0] != nodes[0].ov.Host().ID() {
		t.Fatalf("providers: %v %v", provs, err)
	}
}

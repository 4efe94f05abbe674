package swarm

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/meta"
)

// A swarm told of many peers dials DialPeers of them, chosen at random,
// not the first of the list: every peer of a crowd hears of the others in
// the same order, and taking the head of it made hubs.
func TestDialsARandomChoiceOfTheKnownPeers(t *testing.T) {
	hosts, err := p2phost.Loopback(1, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer p2phost.CloseAll(hosts, 5*time.Second)
	var mu sync.Mutex
	dialled := map[peer.ID]bool{}
	// Dials that never finish: each holds its place until the swarm ends.
	open := func(ctx context.Context, p peer.ID) (network.Stream, error) {
		mu.Lock()
		dialled[p] = true
		mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	const dials = 6
	m := NewManager(hosts[0], open, Config{DialPeers: dials})
	defer m.Close()
	src := filepath.Join(t.TempDir(), "f.bin")
	writeFile(t, src, 64<<10, 1)
	info, err := meta.Build(src, 16<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Get(info.Hash(), filepath.Join(t.TempDir(), "get"), GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]peer.ID, 60)
	for i := range ids {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			t.Fatal(err)
		}
		if ids[i], err = peer.IDFromPrivateKey(k); err != nil {
			t.Fatal(err)
		}
	}
	s.AddPeers(ids...)
	// Wait for the staggered dials' timers to have fired, then count.
	testwait.Until(t, 10*time.Second, func() error {
		s.mu.Lock()
		pending := len(s.deferred)
		s.mu.Unlock()
		mu.Lock()
		n := len(dialled)
		mu.Unlock()
		if pending > 0 || n < dials {
			return fmt.Errorf("%d dials made, %d waiting", n, pending)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(dialled) != dials {
		t.Fatalf("%d peers dialled, want %d", len(dialled), dials)
	}
	// The first four of the list were dialled at once before; a random
	// choice of 6 of 60 holds all four with a chance of 3 in 100,000.
	head := 0
	for _, id := range ids[:4] {
		if dialled[id] {
			head++
		}
	}
	if head == 4 {
		t.Error("the first four peers of the list were all dialled: the choice follows the list's order")
	}
}

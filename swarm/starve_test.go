package swarm

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/meta"
)

// gatedDiscovery finds nobody until its gate opens, then the peers given.
type gatedDiscovery struct {
	gate  chan struct{}
	peers []peer.ID
}

func (d *gatedDiscovery) Announce(context.Context, meta.InfoHash) error { return nil }

func (d *gatedDiscovery) FindPeers(context.Context, meta.InfoHash) ([]peer.ID, error) {
	select {
	case <-d.gate:
		return d.peers, nil
	default:
		return nil, nil
	}
}

// A leecher that already holds DialPeers/2 peers, none of which has what
// it needs, goes on looking and dials the seed it then finds. A seed only
// waits to be dialled, so a leecher that stopped looking once it had
// enough peers stalled for good when the seed restarted after the others
// had reconnected among themselves.
func TestStarvedLeecherLooksForMorePeers(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 512<<10, 4)
	disc := &gatedDiscovery{gate: make(chan struct{})}
	ps := startPeers(t, 4, func(i int) Config {
		if i == 0 {
			return Config{DialPeers: 4, Discovery: disc}
		}
		return Config{DialPeers: 4}
	})
	leecher, idle1, idle2, seed := ps[0], ps[1], ps[2], ps[3]
	disc.peers = []peer.ID{seed.h.ID()}
	if _, err := seed.m.Seed(info, src, ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, p := range []testPeer{idle1, idle2} {
		if _, err := p.m.Get(info.Hash(), filepath.Join(dir, "idle", fmt.Sprint(i)), GetOptions{Info: info}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := leecher.m.Get(info.Hash(), filepath.Join(dir, "leech"), GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	s.AddPeers(idle1.h.ID(), idle2.h.ID())
	testwait.Until(t, 10*time.Second, func() error {
		if n := s.Status().Peers; n < 2 {
			return fmt.Errorf("the leecher has %d peers, want the 2 that hold nothing", n)
		}
		return nil
	})
	// Only now does the ring know of the seed: the leecher has its
	// DialPeers/2 peers already.
	close(disc.gate)
	waitDone(t, s, 30*time.Second)
}

package swarm

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peerstore"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/wire"
)

// A seed whose resource manager will not give a stream the memory of its
// reader drops the stream, saying why, before it reads a message; with
// room for the reader the same fetch completes.
func TestAttachReservesReaderMemory(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 256<<10, 5)
	need := wire.ReaderMemory((info.NumPieces() + 7) / 8)
	for _, c := range []struct {
		limit int
		fits  bool
	}{{need - 1, false}, {need, true}} {
		t.Run(fmt.Sprintf("stream limit %d", c.limit), func(t *testing.T) {
			limits := rcmgr.PartialLimitConfig{
				Stream: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(c.limit)},
			}.Build(rcmgr.DefaultLimits.AutoScale())
			rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), rcmgr.WithMetricsDisabled())
			if err != nil {
				t.Fatal(err)
			}
			sh, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(rm))...)
			if err != nil {
				t.Fatal(err)
			}
			hosts, err := p2phost.Loopback(1, "tcp")
			if err != nil {
				sh.Close()
				t.Fatal(err)
			}
			lh := hosts[0]
			lh.Peerstore().AddAddrs(sh.ID(), sh.Addrs(), peerstore.PermanentAddrTTL)
			var log testwait.LogBuffer
			seed := NewManager(sh, nil, Config{Log: slog.New(slog.NewTextHandler(&log, nil))})
			leech := NewManager(lh, nil, Config{})
			t.Cleanup(func() {
				leech.Close()
				seed.Close()
				lh.Close()
				sh.Close()
			})
			if _, err := seed.Seed(info, src, ShareOptions{}); err != nil {
				t.Fatal(err)
			}
			s, err := leech.Get(info.Hash(), filepath.Join(t.TempDir(), "out"), GetOptions{Info: info})
			if err != nil {
				t.Fatal(err)
			}
			s.AddPeers(sh.ID())
			if c.fits {
				waitDone(t, s, 30*time.Second)
				return
			}
			testwait.Until(t, 10*time.Second, func() error {
				if !strings.Contains(log.String(), "dropped a stream: no memory for its reader") {
					return fmt.Errorf("the seed has not said it dropped a stream; its log:\n%s", log.String())
				}
				return nil
			})
			// The leecher may count the seed for the moment between opening
			// its stream and seeing it reset, and it redials; what must hold
			// is that no piece ever arrives and that no peer stays.
			testwait.Until(t, 10*time.Second, func() error {
				if st := s.Status(); st.Have != 0 {
					t.Fatalf("the leecher got pieces from a seed that had no memory for it: %+v", st)
				} else if st.Peers != 0 {
					return fmt.Errorf("the leecher still counts the seed as a peer: %+v", st)
				}
				return nil
			})
			if st := s.Status(); st.Have != 0 {
				t.Fatalf("the leecher got pieces from a seed that had no memory for it: %+v", st)
			}
		})
	}
}

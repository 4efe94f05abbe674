package overlay

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
)

// restartMember is one member's host, membership and router.
type restartMember struct {
	h host.Host
	m *Membership
	r *Router
}

func startRestartMember(t *testing.T, key crypto.PrivKey) *restartMember {
	t.Helper()
	h, err := libp2p.New(append(p2phost.Options(), libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMembership(h, MembershipConfig{tune: fastTiming})
	if err != nil {
		t.Fatal(err)
	}
	rm := &restartMember{h: h, m: m, r: NewRouter(h, m, RouterConfig{})}
	t.Cleanup(rm.stop)
	return rm
}

func (rm *restartMember) stop() {
	rm.r.Close()
	_ = rm.m.Close()
	_ = rm.h.Close()
}

// heldRow is the sequence number of p's row that r holds, and when r took
// it (on r's clock), or ok false.
func heldRow(r *Router, p peer.ID) (seq uint64, at int64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	raw, ok := r.raw[p]
	if !ok {
		return 0, 0, false
	}
	return raw.row.Seq, raw.at, true
}

// A member restarted with the same identity (a restart from its home)
// must have its rows taken by the others at once, although its previous
// run had sent many rows: a row sequence that started again at 1 was
// refused until it passed the old count.
func TestRestartedMembersRowsAreTakenAtOnce(t *testing.T) {
	key := mustKey(t)
	a := startRestartMember(t, mustKey(t))
	b := startRestartMember(t, mustKey(t))
	c := startRestartMember(t, key)
	join := func(rm *restartMember) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := rm.m.Join(ctx, []peer.AddrInfo{{ID: a.h.ID(), Addrs: a.h.Addrs()}}); err != nil {
			t.Fatal(err)
		}
	}
	join(b)
	join(c)
	id := c.h.ID()
	testwait.Until(t, 20*time.Second, func() error {
		for _, o := range []*restartMember{a, b} {
			if _, _, ok := heldRow(o.r, id); !ok {
				return fmt.Errorf("%s holds no row of c yet", o.h.ID())
			}
		}
		return nil
	})
	// As after a long uptime: c's last run numbered many rows.
	c.r.mu.Lock()
	c.r.core.RowSeq(c.r.core.LastRowSeq() + 1000)
	c.r.mu.Unlock()
	testwait.Until(t, 30*time.Second, func() error {
		c.r.mu.Lock()
		last := c.r.core.LastRowSeq()
		c.r.mu.Unlock()
		for _, o := range []*restartMember{a, b} {
			if seq, _, _ := heldRow(o.r, id); seq < last {
				return fmt.Errorf("%s holds c's row %d, c has sent %d", o.h.ID(), seq, last)
			}
		}
		return nil
	})
	c.stop()
	restartedAt := map[*restartMember]int64{a: a.r.now(), b: b.r.now()}
	c2 := startRestartMember(t, key)
	join(c2)
	// c2 sends its first row once it has measured a link (a probe round,
	// half a second); the others must take it. Without the fix they refuse
	// every row until c2 has sent a thousand.
	testwait.Until(t, 10*time.Second, func() error {
		for o, since := range restartedAt {
			seq, at, ok := heldRow(o.r, id)
			if !ok || at < since {
				return fmt.Errorf("%s has taken no row of the restarted c (holds %d)", o.h.ID(), seq)
			}
		}
		return nil
	})
}

func mustKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

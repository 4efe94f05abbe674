package swarm

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/relaytest"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

// swarmConn is s's connection to p, its stream's libp2p connection, and
// whether it is being dialled.
func swarmConn(s *Swarm, p peer.ID) (c *conn, lc network.Conn, dialing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.conns[p]; c != nil {
		lc = c.st.Conn()
	}
	return c, lc, s.dialing[p]
}

// onCircuitNow says whether s's connection to p rides a circuit; one that
// rides anything else is a permanent failure.
func onCircuitNow(s *Swarm, p peer.ID) error {
	c, lc, _ := swarmConn(s, p)
	switch {
	case c == nil:
		return fmt.Errorf("no swarm connection to %s yet", p)
	case !relaytest.IsCircuit(lc.RemoteMultiaddr()):
		return testwait.Permanent{Err: fmt.Errorf("the swarm connection to %s rides %s, not the circuit", p, lc.RemoteMultiaddr())}
	}
	return nil
}

// A swarm connection made through a relay circuit moves onto the direct
// connection once one exists and the smaller peer ID calls MoveToDirect;
// the larger ID's call does nothing; the download in progress goes on, and
// the old stream is gone from the circuit on both sides.
func TestMoveToDirect(t *testing.T) {
	a, b, heal := relaytest.Pair(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "seed", "data.bin")
	want, err := WriteSample(src, 3<<20, 21)
	if err != nil {
		t.Fatal(err)
	}
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	// B uploads slowly, so that the move falls in the middle of the transfer.
	mgrA := NewManager(a, nil, Config{})
	t.Cleanup(func() { _ = mgrA.Close() })
	mgrB := NewManager(b, nil, Config{UploadRate: 1 << 20})
	t.Cleanup(func() { _ = mgrB.Close() })
	seed, err := mgrB.Seed(info, src, ShareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leech, err := mgrA.Get(info.Hash(), filepath.Join(dir, "out"), GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	leech.AddPeers(b.ID())
	testwait.Until(t, 5*time.Second, func() error {
		if err := onCircuitNow(leech, b.ID()); err != nil {
			return err
		}
		if err := onCircuitNow(seed, a.ID()); err != nil {
			return err
		}
		if leech.Status().Downloaded == 0 {
			return fmt.Errorf("nothing downloaded over the circuit yet")
		}
		return nil
	})

	// Which side moves depends on the random peer IDs.
	type side struct {
		name string
		h    host.Host
		m    *Manager
		s    *Swarm
	}
	small, large := side{"A (leecher)", a, mgrA, leech}, side{"B (seed)", b, mgrB, seed}
	if b.ID() < a.ID() {
		small, large = large, small
	}
	t.Logf("%s has the smaller ID and moves", small.name)
	oldSmall, circSmall, _ := swarmConn(small.s, large.h.ID())
	oldLarge, circLarge, _ := swarmConn(large.s, small.h.ID())

	heal()
	if !relaytest.IsCircuit(circSmall.RemoteMultiaddr()) || circSmall.IsClosed() {
		t.Fatal("the circuit closed when the direct connection came")
	}
	if st := leech.Status(); st.Complete || st.Have == st.Pieces {
		t.Fatalf("the download finished before the move (%+v): the test proves nothing; slow the seed", st)
	}
	// Direct and circuit side by side; nothing moved on its own.
	testwait.Until(t, 5*time.Second, func() error {
		for _, x := range []side{small, large} {
			other := small.h.ID()
			if x == small {
				other = large.h.ID()
			}
			if n := len(x.h.Network().ConnsToPeer(other)); n != 2 {
				return fmt.Errorf("%s has %d connections to its peer, want the circuit and the direct one", x.name, n)
			}
			if err := onCircuitNow(x.s, other); err != nil {
				return fmt.Errorf("%s before MoveToDirect: %w", x.name, err)
			}
		}
		return nil
	})

	// The larger ID's call is a no-op: no dial, the same connection.
	large.m.MoveToDirect(small.h.ID())
	if c, lc, dialing := swarmConn(large.s, small.h.ID()); dialing || c != oldLarge || lc != circLarge {
		t.Fatalf("MoveToDirect on the larger ID acted: dialing %v, same conn %v, on %v", dialing, c == oldLarge, lc.RemoteMultiaddr())
	}
	if c, _, dialing := swarmConn(small.s, large.h.ID()); dialing || c != oldSmall {
		t.Fatalf("MoveToDirect on the larger ID changed the smaller's side: dialing %v, same conn %v", dialing, c == oldSmall)
	}

	small.m.MoveToDirect(large.h.ID())
	testwait.Until(t, 5*time.Second, func() error {
		for _, x := range []struct {
			side
			peer    peer.ID
			old     *conn
			circ    network.Conn
			wantOut bool
		}{{small, large.h.ID(), oldSmall, circSmall, true}, {large, small.h.ID(), oldLarge, circLarge, false}} {
			c, lc, _ := swarmConn(x.s, x.peer)
			switch {
			case c == nil:
				return fmt.Errorf("%s has no swarm connection to its peer", x.name)
			case c == x.old || relaytest.IsCircuit(lc.RemoteMultiaddr()):
				return fmt.Errorf("%s's swarm connection still rides %s", x.name, lc.RemoteMultiaddr())
			case c.outbound != x.wantOut:
				// The smaller ID opened the new stream, and both keep it.
				return testwait.Permanent{Err: fmt.Errorf("%s keeps a stream with outbound %v, want %v", x.name, c.outbound, x.wantOut)}
			}
			for _, st := range x.circ.GetStreams() {
				if st.Protocol() == wire.Protocol {
					return fmt.Errorf("%s still has a swarm stream on the circuit", x.name)
				}
			}
		}
		return nil
	})
	if circSmall.IsClosed() {
		t.Error("the circuit closed: the move was not what took the swarm off it")
	}
	waitDone(t, leech, 8*time.Second)
	if got, err := FileSHA1(leech.Path()); err != nil || got != want {
		t.Fatalf("the copy differs from the original (%v)", err)
	}
	for _, s := range []*Swarm{leech, seed} {
		if st := s.Status(); st.Banned != 0 {
			t.Fatalf("a peer was banned: %+v", st)
		}
	}
}

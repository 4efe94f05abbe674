package overlay

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
)

// fastTiming makes failure detection take a second or two instead of ten.
func fastTiming(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 2
	c.PushPullInterval = time.Second
}

func newTestHost(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func newTestMember(t *testing.T) (host.Host, *Membership) {
	t.Helper()
	h := newTestHost(t)
	m, err := NewMembership(h, MembershipConfig{tune: fastTiming})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return h, m
}

func stateOf(m *Membership, id peer.ID) State {
	for _, mem := range m.Members() {
		if mem.ID == id {
			return mem.State
		}
	}
	return ""
}

func allSee(ms []*Membership, ids []peer.ID, want State) error {
	for i, m := range ms {
		for _, id := range ids {
			if got := stateOf(m, id); got != want {
				return fmt.Errorf("member %d sees %s as %q, want %q", i, id, got, want)
			}
		}
	}
	return nil
}

func TestMembershipJoinFailLeave(t *testing.T) {
	var hosts []host.Host
	var ms []*Membership
	for i := 0; i < 4; i++ {
		h, m := newTestMember(t)
		hosts, ms = append(hosts, h), append(ms, m)
	}
	events, cancel := ms[0].Subscribe()
	defer cancel()

	boot := peer.AddrInfo{ID: hosts[0].ID(), Addrs: hosts[0].Addrs()}
	ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	for _, m := range ms[1:] {
		if n, err := m.Join(ctx, []peer.AddrInfo{boot}); err != nil || n != 1 {
			t.Fatalf("join: %d, %v", n, err)
		}
	}
	ids := []peer.ID{hosts[0].ID(), hosts[1].ID(), hosts[2].ID(), hosts[3].ID()}
	testwait.Until(t, 10*time.Second, func() error { return allSee(ms, ids, StateAlive) })
	for i, m := range ms {
		if n := m.NumAlive(); n != 4 {
			t.Errorf("member %d: NumAlive %d, want 4", i, n)
		}
	}

	// A crash: membership and host stop without a word.
	_ = ms[3].Close()
	_ = hosts[3].Close()
	testwait.Until(t, 20*time.Second, func() error { return allSee(ms[:3], ids[3:], StateDead) })

	// A graceful leave is told apart from a failure.
	if err := ms[2].Leave(2 * time.Second); err != nil {
		t.Fatalf("leave: %v", err)
	}
	testwait.Until(t, 10*time.Second, func() error { return allSee(ms[:2], ids[2:3], StateLeft) })

	// Member 0 heard every change after it subscribed, in order: three
	// joins, a failure, a leave (its own join came before Subscribe).
	want := map[peer.ID][]EventKind{
		ids[0]: nil,
		ids[1]: {EventJoined},
		ids[2]: {EventJoined, EventLeft},
		ids[3]: {EventJoined, EventFailed},
	}
	got := map[peer.ID][]EventKind{}
	collect := time.After(2 * time.Second)
loop:
	for {
		select {
		case ev := <-events:
			if ev.Kind != EventUpdated {
				got[ev.Member.ID] = append(got[ev.Member.ID], ev.Kind)
			}
		case <-collect:
			break loop
		}
	}
	for id, kinds := range want {
		if fmt.Sprint(got[id]) != fmt.Sprint(kinds) {
			t.Errorf("events for %s: got %v, want %v", id, got[id], kinds)
		}
	}
}

func TestJoinReportsUnreachableBootstrap(t *testing.T) {
	_, m := newTestMember(t)
	ghost := newTestHost(t)
	info := peer.AddrInfo{ID: ghost.ID(), Addrs: ghost.Addrs()}
	_ = ghost.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := m.Join(ctx, []peer.AddrInfo{info})
	if n != 0 || err == nil {
		t.Fatalf("join of a stopped peer: %d, %v; want an error", n, err)
	}
	if want := info.Addrs[0].String(); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the address %s", err, want)
	}
}

func TestSubscriberKeepsOrderWithoutBlocking(t *testing.T) {
	s := newSubscriber()
	defer s.close()
	const n = 10000
	for i := 0; i < n; i++ {
		s.push(Event{Kind: EventKind(1 + i%4)}) // never blocks, nobody reads yet
	}
	for i := 0; i < n; i++ {
		ev := <-s.out
		if ev.Kind != EventKind(1+i%4) {
			t.Fatalf("event %d: kind %v, want %v", i, ev.Kind, EventKind(1+i%4))
		}
	}
}

func TestParseClass(t *testing.T) {
	for _, c := range []Class{ClassDefault, ClassLatency, ClassThroughput} {
		got, err := ParseClass(c.String())
		if err != nil || got != c {
			t.Errorf("ParseClass(%q) = %v, %v", c.String(), got, err)
		}
	}
	if _, err := ParseClass("bulk"); err == nil {
		t.Error("ParseClass(bulk): want an error")
	}
}

// A layer's field travels in the metadata, and a change spreads once
// UpdateMeta is called.
func TestMetaFieldsSpread(t *testing.T) {
	var mu sync.Mutex
	value := []byte("v1")
	ha := newTestHost(t)
	ma, err := NewMembership(ha, MembershipConfig{tune: fastTiming, Fields: func() []MetaField {
		mu.Lock()
		defer mu.Unlock()
		return []MetaField{{Tag: MetaTagReach, Value: bytes.Clone(value)}}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ma.Close() })
	_, mb := newTestMember(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mb.Join(ctx, []peer.AddrInfo{{ID: ha.ID(), Addrs: ha.Addrs()}}); err != nil {
		t.Fatal(err)
	}
	seen := func(want string) func() error {
		return func() error {
			for _, m := range mb.Members() {
				if m.ID != ha.ID() {
					continue
				}
				if v, ok := m.Field(MetaTagReach); !ok || string(v) != want {
					return fmt.Errorf("b sees a's field as %q (%v), want %q", v, ok, want)
				}
				return nil
			}
			return fmt.Errorf("b does not know a")
		}
	}
	testwait.Until(t, 10*time.Second, seen("v1"))
	mu.Lock()
	value = []byte("v2")
	mu.Unlock()
	if err := ma.UpdateMeta(time.Second); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, seen("v2"))
}

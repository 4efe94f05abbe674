package overlay

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/testwait"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, ClusterKeySize) }

func newKeyedMember(t *testing.T, keys ...[]byte) (host.Host, *Membership) {
	t.Helper()
	h := newTestHost(t)
	m, err := NewMembership(h, MembershipConfig{tune: fastTiming, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return h, m
}

func joinVia(m *Membership, h host.Host) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return m.Join(ctx, []peer.AddrInfo{{ID: h.ID(), Addrs: h.Addrs()}})
}

func TestClosedGroupLetsInOnlyTheKey(t *testing.T) {
	k := testKey(1)
	ha, a := newKeyedMember(t, k)
	hb, b := newKeyedMember(t, k)
	if !a.Closed() || !b.Closed() {
		t.Fatal("a membership with keys does not say it is closed")
	}
	if _, err := joinVia(b, ha); err != nil {
		t.Fatalf("same key: join failed: %v", err)
	}
	testwait.Until(t, 10*time.Second, func() error {
		return allSee([]*Membership{a, b}, []peer.ID{ha.ID(), hb.ID()}, StateAlive)
	})

	hw, w := newKeyedMember(t, testKey(2))
	_, err := joinVia(w, ha)
	if !errors.Is(err, ErrClusterKeyMismatch) {
		t.Fatalf("wrong key: join gave %v, want ErrClusterKeyMismatch", err)
	}

	hn, none := newTestMember(t)
	if none.Closed() {
		t.Fatal("a membership without keys says it is closed")
	}
	_, err = joinVia(none, ha)
	if !errors.Is(err, ErrClusterKeyMissing) {
		t.Fatalf("no key: join gave %v, want ErrClusterKeyMissing", err)
	}

	// The other way round: a keyed peer cannot join an open group.
	ho, open := newTestMember(t)
	hk, keyed := newKeyedMember(t, k)
	if _, err := joinVia(keyed, ho); !errors.Is(err, ErrGroupNotClosed) {
		t.Fatalf("key into an open group: join gave %v, want ErrGroupNotClosed", err)
	}

	// Neither outsider made it into the group, nor the group into theirs.
	for _, id := range []peer.ID{hw.ID(), hn.ID()} {
		for i, m := range []*Membership{a, b} {
			if st := stateOf(m, id); st != "" {
				t.Errorf("member %d knows outsider %s as %q", i, id, st)
			}
		}
	}
	if w.NumAlive() != 1 || none.NumAlive() != 1 || open.NumAlive() != 1 || keyed.NumAlive() != 1 {
		t.Errorf("an outsider's group grew: wrong key %d, no key %d, open %d, keyed %d",
			w.NumAlive(), none.NumAlive(), open.NumAlive(), keyed.NumAlive())
	}
	_ = hk
}

func TestKeyringRotationKeepsTheGroup(t *testing.T) {
	old, next := testKey(1), testKey(2)
	var hosts []host.Host
	var ms []*Membership
	for range 3 {
		h, m := newKeyedMember(t, old)
		hosts, ms = append(hosts, h), append(ms, m)
	}
	for _, m := range ms[1:] {
		if _, err := joinVia(m, hosts[0]); err != nil {
			t.Fatal(err)
		}
	}
	ids := []peer.ID{hosts[0].ID(), hosts[1].ID(), hosts[2].ID()}
	whole := func() error { return allSee(ms, ids, StateAlive) }
	testwait.Until(t, 10*time.Second, whole)
	// The group stays whole through every step: no member ever sees
	// another fail or leave, and after each step every member still
	// completes a full push/pull with each other one (which fails at once
	// if their keys do not agree).
	var subs []<-chan Event
	for _, m := range ms {
		ch, cancel := m.Subscribe()
		defer cancel()
		subs = append(subs, ch)
	}
	noFailures := func(step string) {
		t.Helper()
		for i, ch := range subs {
			for {
				select {
				case ev := <-ch:
					if ev.Kind == EventFailed || ev.Kind == EventLeft {
						t.Fatalf("after %s: member %d saw %s %s", step, i, ev.Member.ID, ev.Kind)
					}
					continue
				default:
				}
				break
			}
		}
	}
	settle := func(step string) {
		t.Helper()
		for i, m := range ms {
			for j, h := range hosts {
				if i == j {
					continue
				}
				if _, err := joinVia(m, h); err != nil {
					t.Fatalf("after %s: member %d cannot sync with member %d: %v", step, i, j, err)
				}
			}
		}
		if err := whole(); err != nil {
			t.Fatalf("after %s: %v", step, err)
		}
		noFailures(step)
	}
	for _, m := range ms {
		if err := m.AddKey(next); err != nil {
			t.Fatal(err)
		}
	}
	settle("add")
	for _, m := range ms {
		if err := m.UseKey(next); err != nil {
			t.Fatal(err)
		}
	}
	settle("use")
	for _, m := range ms {
		if err := m.RemoveKey(next); !errors.Is(err, ErrRemovePrimary) {
			t.Fatalf("removing the primary gave %v, want ErrRemovePrimary", err)
		}
		if err := m.RemoveKey(old); err != nil {
			t.Fatal(err)
		}
		if got := m.Keys(); len(got) != 1 || !bytes.Equal(got[0], next) {
			t.Fatalf("keys after rotation: %d, primary is the new one: %v", len(got), len(got) > 0 && bytes.Equal(got[0], next))
		}
	}
	settle("remove")
	_, stale := newKeyedMember(t, old)
	if _, err := joinVia(stale, hosts[1]); !errors.Is(err, ErrClusterKeyMismatch) {
		t.Fatalf("old key after rotation: join gave %v, want ErrClusterKeyMismatch", err)
	}
	if err := whole(); err != nil {
		t.Fatal(err)
	}
	noFailures("the stale peer's attempt")
}

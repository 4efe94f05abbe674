package dht

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/overlay"
)

type testNode struct {
	ov   *overlay.Overlay
	dht  *DHT
	kill func() // stops it without a word to anyone; safe to call again
}

func newTestNode(t *testing.T, first bool) *testNode {
	t.Helper()
	return newTestNodeR(t, first, 0)
}

// newTestNodeR starts a peer whose ring keeps r successors and copies (the
// default when 0).
func newTestNodeR(t *testing.T, first bool, r int) *testNode {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	return startTestNode(t, priv, filepath.Join(t.TempDir(), "dht.db"), "/ip4/127.0.0.1/tcp/0", first, r)
}

// startTestNode starts a peer with the identity priv, the record store at
// db and the listen address addr.
func startTestNode(t *testing.T, priv crypto.PrivKey, db, addr string, first bool, r int) *testNode {
	t.Helper()
	h, err := libp2p.New(append(p2phost.Options(), libp2p.Identity(priv), libp2p.ListenAddrStrings(addr))...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := overlay.NewMembership(h, overlay.MembershipConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := record.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	ov := overlay.New(h, m, nil)
	d := New(ov, priv, st, !first, Config{R: r})
	var once sync.Once
	kill := func() {
		once.Do(func() {
			d.Close(false)
			_ = m.Close()
			_ = h.Close()
			_ = st.Close()
		})
	}
	t.Cleanup(kill)
	return &testNode{ov: ov, dht: d, kill: kill}
}

// joinThrough starts more peers (keeping r successors and copies, the
// default when 0) that join the group through first, and returns first
// and them.
func joinThrough(t *testing.T, first *testNode, more, r int) []*testNode {
	t.Helper()
	nodes := []*testNode{first}
	boot := peer.AddrInfo{ID: first.ov.Host().ID(), Addrs: first.ov.Host().Addrs()}
	for range more {
		x := newTestNodeR(t, false, r)
		if _, err := x.ov.Members().Join(context.Background(), []peer.AddrInfo{boot}); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, x)
	}
	return nodes
}

// ringIdeal reports whether every node's successor list is the next r
// nodes of the ring (ending with itself in a ring smaller than r+1).
func ringIdeal(nodes []*testNode, r int) error {
	ring := make([]*testNode, len(nodes))
	copy(ring, nodes)
	slices.SortFunc(ring, func(a, b *testNode) int { return a.dht.Self().ID.Cmp(b.dht.Self().ID) })
	n := len(ring)
	for i, x := range ring {
		var want []chord.Peer
		for j := 1; j <= r && j < n; j++ {
			want = append(want, ring[(i+j)%n].dht.Self())
		}
		if n-1 < r {
			want = append(want, x.dht.Self())
		}
		if st := x.dht.Ring(); !st.Joined || !slices.Equal(st.Successors, want) {
			return fmt.Errorf("%s: joined=%v successors %v, want %v", x.dht.Self(), st.Joined, st.Successors, want)
		}
	}
	return nil
}

// Four peers in one process: they join one ring over real loopback
// streams, a record put through one is read through another, and a key
// never put is reported missing. Run under -race in CI.
func TestBindingRingAndRecords(t *testing.T) {
	nodes := joinThrough(t, newTestNode(t, true), 3, 0)
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

// A get right after the key's owner was killed, before anyone has taken it
// for dead: the asker's own successor list ends at the owner, so the
// lookup names the owner alone, and the owner cannot say who follows it.
// The replica set must still reach the live copies past it, and the get
// must find the record there.
func TestGetRightAfterOwnerKilled(t *testing.T) {
	const n, r = 6, 4
	nodes := joinThrough(t, newTestNodeR(t, true, r), n-1, r)
	byName := map[string]*testNode{}
	for _, x := range nodes {
		byName[x.dht.Self().Name] = x
	}
	testwait.Until(t, 60*time.Second, func() error { return ringIdeal(nodes, r) })
	ring := make([]chord.Peer, 0, n)
	for _, x := range nodes {
		ring = append(ring, x.dht.Self())
	}
	slices.SortFunc(ring, func(a, b chord.Peer) int { return a.ID.Cmp(b.ID) })
	// a asks; its list ends at the owner o. A key owned by o has the
	// replicas o and the r-1 peers after it.
	a := ring[0]
	o := ring[r]
	var key []byte
	for i := 0; ; i++ {
		key = fmt.Appendf(nil, "k-%d", i)
		if chord.BetweenRightIncl(chord.HashID(key), ring[r-1].ID, o.ID) {
			break
		}
	}
	var live []peer.ID
	for j := 1; j < r; j++ {
		id, _ := peer.Decode(ring[(r+j)%n].Name)
		live = append(live, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	asker := byName[a.Name].dht
	if reps, err := asker.Put(ctx, key, []byte("v"), time.Minute); err != nil || reps != r {
		t.Fatalf("put: %d replicas, %v", reps, err)
	}
	byName[o.Name].kill() // kill -9, as far as the others can tell

	peers, res, err := asker.replicas(ctx, chord.HashID(key))
	if err != nil {
		t.Fatalf("replicas: %v", err)
	}
	if res.Owner != o {
		t.Logf("the lookup names %s as the owner, not the killed %s: the ring noticed first", res.Owner, o)
	}
	for _, id := range live {
		if !slices.Contains(peers, id) {
			t.Errorf("live replica %s missing from the replica set %v (lookup: owner %s, %v)", id, peers, res.Owner, res.Succs)
		}
	}
	rec, _, err := asker.Get(ctx, key)
	if err != nil || string(rec.Value) != "v" {
		t.Fatalf("get right after the owner was killed: %v, %v", rec, err)
	}
}

// A peer without bootstrap peers (the one the others bootstrapped from)
// restarts with its records before the group took it for dead: the ring
// still lists it. It must not found a ring of its own (a ring of one
// answers for every key, and hands the neighbour that asks it a successor
// list of one), but join the ring it was in, through a peer that talks to
// it, and the ring must be whole again.
func TestRestartedFounderJoinsItsRing(t *testing.T) {
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "dht.db")
	first := startTestNode(t, priv, db, "/ip4/127.0.0.1/tcp/0", true, 0)
	var addr string
	for _, a := range first.ov.Host().Addrs() {
		if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			addr = a.String()
			break
		}
	}
	nodes := joinThrough(t, first, 3, 0)
	testwait.Until(t, 60*time.Second, func() error { return ringIdeal(nodes, 8) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if reps, err := nodes[1].dht.Put(ctx, []byte("k"), []byte("v"), time.Minute); err != nil || reps != 4 {
		t.Fatalf("put: %d replicas, %v", reps, err)
	}
	first.kill()
	again := startTestNode(t, priv, db, addr, true, 0)
	nodes[0] = again
	self := again.dht.Self()
	testwait.Until(t, 60*time.Second, func() error {
		if st := again.dht.Ring(); st.Joined && len(st.Successors) == 1 && st.Successors[0] == self {
			return testwait.Permanent{Err: fmt.Errorf("the restarted %s founded a ring of one", self)}
		}
		return ringIdeal(nodes, 8)
	})
	rec, _, err := again.dht.Get(ctx, []byte("k"))
	if err != nil || string(rec.Value) != "v" {
		t.Fatalf("get through the restarted peer: %v, %v", rec, err)
	}
}

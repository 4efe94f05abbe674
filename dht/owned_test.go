package dht

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/testwait"
)

// startRing starts n peers that form one ring, each keeping every record.
func startRing(t *testing.T, n int) []*testNode {
	t.Helper()
	return startRingR(t, n, 0)
}

// startRingR starts n peers that form one ring with r replicas (the
// default when 0).
func startRingR(t *testing.T, n, r int) []*testNode {
	t.Helper()
	nodes := joinThrough(t, newTestNodeR(t, true, r), n-1, r)
	testwait.Until(t, 30*time.Second, func() error {
		for i, x := range nodes {
			ring := x.dht.Ring()
			want := min(n, 8)
			if r > 0 {
				want = min(n, r)
			}
			if !ring.Joined || len(ring.Successors) != want || ring.Predecessor.IsZero() {
				return fmt.Errorf("node %d: joined=%v successors=%d", i, ring.Joined, len(ring.Successors))
			}
		}
		return nil
	})
	return nodes
}

// Over a real ring: the first writer owns a key, others are refused with
// the owner named, the owner updates and releases it, and a released key
// is anyone's.
func TestOwnedKeysOnTheRing(t *testing.T) {
	nodes := startRing(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice, bob := nodes[1], nodes[2]
	aliceID := alice.ov.Host().ID()
	if _, err := alice.dht.Put(ctx, []byte("k"), []byte("a1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	n, err := bob.dht.Put(ctx, []byte("k"), []byte("b"), time.Minute)
	if !errors.Is(err, record.ErrOwned) {
		t.Fatalf("bob's put of alice's key: %d replicas, err %v; want ErrOwned", n, err)
	}
	if want := aliceID.String(); !strings.Contains(err.Error(), want) {
		t.Fatalf("the refusal %q does not name the owner %s", err, want)
	}
	if _, err := alice.dht.Put(ctx, []byte("k"), []byte("a2"), time.Minute); err != nil {
		t.Fatalf("alice's update: %v", err)
	}
	rec, _, err := nodes[3].dht.Get(ctx, []byte("k"))
	if err != nil || string(rec.Value) != "a2" {
		t.Fatalf("get after the update: %v %v", rec, err)
	}
	first := rec.Claimed
	if _, err := bob.dht.Release(ctx, []byte("k")); !errors.Is(err, record.ErrOwned) {
		t.Fatalf("bob's release of alice's key: %v", err)
	}
	if _, err := alice.dht.Release(ctx, []byte("k")); err != nil {
		t.Fatalf("alice's release: %v", err)
	}
	for i, x := range nodes {
		if _, _, err := x.dht.Get(ctx, []byte("k")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("node %d: get after the release: %v", i, err)
		}
	}
	if _, err := bob.dht.Put(ctx, []byte("k"), []byte("b"), time.Minute); err != nil {
		t.Fatalf("bob's claim of the released key: %v", err)
	}
	rec, err = nodes[0].dht.Resolve(ctx, []byte("k"))
	if err != nil || string(rec.Value) != "b" {
		t.Fatalf("resolve after bob's claim: %v %v", rec, err)
	}
	if rec.Claimed == first {
		t.Fatal("bob's claim kept alice's claim time")
	}
}

// A claim kept up outlives its lease: the owner renews it, across the
// lease's end, and lists it as its own.
func TestClaimsAreRenewed(t *testing.T) {
	old := renewEvery
	renewEvery = 300 * time.Millisecond
	t.Cleanup(func() { renewEvery = old })
	nodes := startRing(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const lease = 3 * time.Second
	if _, err := nodes[0].dht.Claim(ctx, []byte("name:web"), []byte("v"), lease); err != nil {
		t.Fatal(err)
	}
	owned, err := nodes[0].dht.Owned()
	if err != nil || len(owned) != 1 || string(owned[0].Rec.Key) != "name:web" || owned[0].Lease != lease {
		t.Fatalf("owned: %+v, %v", owned, err)
	}
	claimedAt := time.Now()
	testwait.Until(t, 15*time.Second, func() error {
		if time.Since(claimedAt) < 2*lease {
			return errors.New("waiting for two leases to pass")
		}
		return nil
	})
	rec, err := nodes[2].dht.Resolve(ctx, []byte("name:web"))
	if err != nil {
		t.Fatalf("two leases after the claim: %v", err)
	}
	if exp := time.Unix(0, rec.Expires); !exp.After(time.Now()) {
		t.Fatalf("the record expires at %v, in the past", exp)
	}
	// A record that is not kept up runs out.
	if _, err := nodes[1].dht.Put(ctx, []byte("kv:short"), []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, func() error {
		_, err := nodes[2].dht.Resolve(ctx, []byte("kv:short"))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return fmt.Errorf("kv:short still resolves (%v)", err)
	})
}

// In a settled group the replicas the member list implies are the ones a
// ring lookup finds, so Resolve's first round asks the right peers.
func TestGuessedReplicasMatchTheRing(t *testing.T) {
	nodes := startRingR(t, 5, 3)
	testwait.Until(t, 30*time.Second, func() error { return ringIdeal(nodes, 3) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 20 {
		key := chord.HashID([]byte(fmt.Sprintf("key-%d", i)))
		x := nodes[i%len(nodes)].dht
		want, _, err := x.replicas(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := x.guessReplicas(key); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("key %d: the member list implies %v, the ring %v", i, got, want)
		}
	}
}

package record

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func mustClaim(t *testing.T, key, value string, seq uint64, claimed time.Time, priv crypto.PrivKey) *Record {
	t.Helper()
	r, err := NewClaim([]byte(key), []byte(value), seq, claimed, claimed.Add(time.Hour), priv)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ownerOf(t *testing.T, s *Store, key string, now time.Time) peer.ID {
	t.Helper()
	r, err := s.Get([]byte(key), now)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	p, err := r.Publisher()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func idOf(t *testing.T, k crypto.PrivKey) peer.ID {
	t.Helper()
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The first claim owns the key; another owner's later claim is refused
// with ErrOwned, whatever its seq, and the owner's updates go through.
func TestFirstClaimOwnsTheKey(t *testing.T) {
	s, _ := openStore(t)
	alice, bob := testKey(t, 1), testKey(t, 2)
	claimed := t0
	now := t0.Add(10 * time.Minute)
	mustPut(t, s, mustClaim(t, "name:web", "a1", 1, claimed, alice), now, true)
	late := mustClaim(t, "name:web", "b", 1<<40, now, bob)
	if ok, err := s.Put(late, now); ok || !errors.Is(err, ErrOwned) {
		t.Fatalf("bob's claim of alice's name: stored %v, err %v", ok, err)
	}
	// A claim that lies about its time (before alice's) is still refused:
	// alice's claim is older than ClaimWindow.
	backdated := mustClaim(t, "name:web", "b", 2, claimed.Add(-time.Second), bob)
	if ok, err := s.Put(backdated, now); ok || !errors.Is(err, ErrOwned) {
		t.Fatalf("a backdated claim: stored %v, err %v", ok, err)
	}
	mustPut(t, s, mustClaim(t, "name:web", "a2", 2, claimed, alice), now, true)
	if got := mustGetValue(t, s, "name:web", now); got != "a2" {
		t.Fatalf("value %q, want alice's update a2", got)
	}
	if got := ownerOf(t, s, "name:web", now); got != idOf(t, alice) {
		t.Fatalf("owner %s, want alice", got)
	}
}

// Two claims made in the same moment resolve to the same winner on every
// replica, whatever order each saw them in.
func TestSameMomentClaimsConverge(t *testing.T) {
	keys := []crypto.PrivKey{testKey(t, 1), testKey(t, 2), testKey(t, 3)}
	now := t0
	var claims []*Record
	for i, k := range keys {
		// Claimed 3, 2 and 2 seconds ago: the second and third tie on time.
		at := now.Add(-time.Duration(3-min(i, 1)) * time.Second)
		claims = append(claims, mustClaim(t, "kv:x", "v", uint64(i+1), at, k))
	}
	orders := [][]int{{0, 1, 2}, {2, 1, 0}, {1, 2, 0}, {2, 0, 1}}
	var winner peer.ID
	for _, order := range orders {
		s, _ := openStore(t)
		for _, i := range order {
			if _, err := s.Put(claims[i], now); err != nil && !errors.Is(err, ErrOwned) {
				t.Fatal(err)
			}
		}
		got := ownerOf(t, s, "kv:x", now)
		if winner == "" {
			winner = got
		} else if got != winner {
			t.Fatalf("order %v: owner %s, another order gave %s", order, got, winner)
		}
	}
	if winner != idOf(t, keys[0]) {
		t.Fatalf("owner %s, want the earliest claim's (%s)", winner, idOf(t, keys[0]))
	}
	// Between the two that tie on time, the rule still picks one, the
	// same both ways round.
	for _, order := range [][]int{{1, 2}, {2, 1}} {
		s, _ := openStore(t)
		for _, i := range order {
			if _, err := s.Put(claims[i], now); err != nil && !errors.Is(err, ErrOwned) {
				t.Fatal(err)
			}
		}
		want := idOf(t, keys[1])
		if earlier(claims[2], claims[1]) {
			want = idOf(t, keys[2])
		}
		if got := ownerOf(t, s, "kv:x", now); got != want {
			t.Fatalf("tie, order %v: owner %s, want %s", order, got, want)
		}
	}
}

// A release by the owner frees the key at once and is kept, so that it
// also replaces the owner's older records; a release by anyone else is
// refused.
func TestReleaseFreesTheKey(t *testing.T) {
	s, _ := openStore(t)
	alice, bob := testKey(t, 1), testKey(t, 2)
	now := t0.Add(time.Hour / 2)
	claim := mustClaim(t, "name:db", "a", 5, t0, alice)
	mustPut(t, s, claim, now, true)
	forged, err := NewRelease([]byte("name:db"), 9, t0, now.Add(time.Hour), bob)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Put(forged, now); ok || !errors.Is(err, ErrOwned) {
		t.Fatalf("bob's release of alice's name: stored %v, err %v", ok, err)
	}
	rel, err := NewRelease([]byte("name:db"), 6, t0, now.Add(time.Hour), alice)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, rel, now, true)
	if _, err := s.Get([]byte("name:db"), now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the release: %v, want ErrNotFound", err)
	}
	if r, err := s.Lookup([]byte("name:db"), now); err != nil || !r.Released {
		t.Fatalf("Lookup after the release: %v, %v; want the release", r, err)
	}
	// The claim the release replaced, arriving again from a slow replica,
	// does not bring the name back.
	mustPut(t, s, claim, now, false)
	if _, err := s.Get([]byte("name:db"), now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after the old claim came again: %v", err)
	}
	// Anyone may claim a released name at once.
	mustPut(t, s, mustClaim(t, "name:db", "b", 1, now, bob), now, true)
	if got := ownerOf(t, s, "name:db", now); got != idOf(t, bob) {
		t.Fatalf("owner %s, want bob", got)
	}
}

// Version 2 records (a claim time, the release flag) round-trip, and the
// decoder refuses what Marshal never writes.
func TestClaimEncoding(t *testing.T) {
	alice := testKey(t, 1)
	claim := mustClaim(t, "k", "v", 3, t0, alice)
	rel, err := NewRelease([]byte("k"), 4, t0, t0.Add(time.Hour), alice)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Record{claim, rel} {
		got, err := Unmarshal(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if !sameRecord(got, r) {
			t.Fatalf("round trip changed the record: %+v, want %+v", got, r)
		}
		if err := got.Verify(t0); err != nil {
			t.Fatal(err)
		}
	}
	// Changing the claim time or the flag breaks the signature.
	c := clone(claim)
	c.Claimed--
	if err := c.Verify(t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("claim time changed: %v, want ErrBadSignature", err)
	}
	c = clone(claim)
	c.Released = true
	if err := c.Verify(t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("release flag set: %v, want ErrBadSignature", err)
	}
	// Unknown flags, and a version 2 encoding of a version 1 record.
	enc := claim.Marshal()
	flagsAt := len(enc) - (1 + len(claim.PubKey) + 1 + len(claim.Sig)) - 1
	bad := append([]byte(nil), enc...)
	bad[flagsAt] = 0x80
	if _, err := Unmarshal(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown flags: %v, want ErrMalformed", err)
	}
	plain := mustNew(t, KindValue, "k", "v", 1, t0.Add(time.Hour), alice)
	if plain.Marshal()[0] != codecVersion {
		t.Fatal("a record without a claim is not written as version 1")
	}
	// A provider record may not carry a claim.
	p := mustNew(t, KindProvider, "k", "", 1, t0.Add(time.Hour), alice)
	p.Claimed = t0.UnixNano()
	if err := p.Verify(t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a provider record with a claim time: %v, want ErrMalformed", err)
	}
	// Nor may a claim lie in the future.
	future := mustClaim(t, "k", "v", 1, t0.Add(time.Hour), alice)
	if err := future.Verify(t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a claim an hour ahead: %v, want ErrMalformed", err)
	}
}

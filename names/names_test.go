package names

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/testwait"
)

func TestValidate(t *testing.T) {
	good := []string{"web", "db-1", "a", "x.y.z", "0", strings.Repeat("a", 63), strings.Repeat("a.", 126) + "a"}
	for _, n := range good {
		if err := Validate(n); err != nil {
			t.Errorf("Validate(%q): %v", n, err)
		}
	}
	bad := []string{"", "Web", "we b", "web_1", "-web", "web-", "a..b", ".a", "a.", strings.Repeat("a", 64),
		strings.Repeat("a.", 127) + "a", "wéb", "a/b", "a\x00"}
	for _, n := range bad {
		if err := Validate(n); !errors.Is(err, ErrBadName) {
			t.Errorf("Validate(%q) = %v, want ErrBadName", n, err)
		}
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := Entry{Services: []string{"db", "web"}}
	got, err := Decode(e.Encode())
	if err != nil || len(got.Services) != 2 || got.Services[0] != "db" {
		t.Fatalf("Decode(Encode(%v)) = %v, %v", e, got, err)
	}
	for _, b := range []string{`{"services":["web","db"]}`, `{"services":["Web"]}`, `{"x":1}`, `{} {}`, `[`, `{"services":["a","a"]}`} {
		if _, err := Decode([]byte(b)); err == nil {
			t.Errorf("Decode(%s) took it", b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"services":["db","web"]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Decode(e.Encode())
		if err != nil || len(again.Services) != len(e.Services) {
			t.Fatalf("a decoded entry does not decode again: %v", err)
		}
	})
}

// fakeRing answers lookups with the record it holds, counting them.
type fakeRing struct {
	mu    sync.Mutex
	rec   *record.Record
	calls atomic.Int32
}

func (f *fakeRing) lookup(ctx context.Context, key []byte) (*record.Record, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rec == nil {
		return nil, ErrNotFound
	}
	return f.rec, nil
}

func claim(t *testing.T, name string, services []string, seq uint64, now time.Time) *record.Record {
	t.Helper()
	priv, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := record.NewClaim(Key(name), Entry{Services: services}.Encode(), seq, now, now.Add(time.Hour), priv)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A resolution is served from the cache until the record expires; once
// the answer is older than RefreshAfter, it is refreshed in the
// background while the cached one is served.
func TestResolverCachesAndRefreshes(t *testing.T) {
	t0 := time.Now()
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	ring := &fakeRing{rec: claim(t, "web", []string{"http"}, 1, t0)}
	r := NewResolver(ring.lookup, clock)
	defer r.Close()
	ctx := context.Background()
	res, err := r.Resolve(ctx, "web")
	if err != nil || res.Cached || res.Services[0] != "http" {
		t.Fatalf("first resolution: %+v, %v", res, err)
	}
	res, err = r.Resolve(ctx, "web")
	if err != nil || !res.Cached || ring.calls.Load() != 1 {
		t.Fatalf("second resolution: cached %v, %d lookups, %v", res.Cached, ring.calls.Load(), err)
	}
	// The owner updates the name; a stale cached answer is served and
	// refreshed behind it.
	ring.mu.Lock()
	ring.rec = claim(t, "web", []string{"http", "ssh"}, 2, t0)
	ring.mu.Unlock()
	advance(RefreshAfter + time.Second)
	res, err = r.Resolve(ctx, "web")
	if err != nil || !res.Cached || len(res.Services) != 1 {
		t.Fatalf("stale resolution: %+v, %v", res, err)
	}
	testwait.Until(t, 5*time.Second, func() error {
		res, err := r.Resolve(ctx, "web")
		if err != nil || len(res.Services) != 2 {
			return errors.New("the refreshed answer has not come")
		}
		return nil
	})
	// Past the record's expiry the cache does not answer.
	advance(2 * time.Hour)
	ring.mu.Lock()
	ring.rec = nil
	ring.mu.Unlock()
	if _, err := r.Resolve(ctx, "web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after expiry: %v, want ErrNotFound", err)
	}
	if _, err := r.Resolve(ctx, "Bad_Name"); !errors.Is(err, ErrBadName) {
		t.Fatalf("a bad name: %v", err)
	}
}

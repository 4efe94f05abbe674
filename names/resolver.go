package names

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/record"
)

// ErrNotFound: no one holds the name.
var ErrNotFound = errors.New("name not found")

// Lookup fetches the record of a ring key: the first valid answer of a
// replica (dht.DHT.Resolve), ErrNotFound-wrapping when there is none.
type Lookup func(ctx context.Context, key []byte) (*record.Record, error)

// Resolved is what a name resolves to.
type Resolved struct {
	Name     string    `json:"name"`
	Owner    peer.ID   `json:"owner"`
	Services []string  `json:"services,omitempty"`
	Claimed  time.Time `json:"claimed"`
	Expires  time.Time `json:"expires"`
	Seq      uint64    `json:"seq"`
	// Cached says the answer came from the cache, and Age how old it is.
	Cached bool          `json:"cached"`
	Age    time.Duration `json:"age_ns"`
}

// FromRecord reads a name's record.
func FromRecord(name string, r *record.Record) (Resolved, error) {
	owner, err := r.Publisher()
	if err != nil {
		return Resolved{}, err
	}
	e, err := Decode(r.Value)
	if err != nil {
		return Resolved{}, err
	}
	return Resolved{Name: name, Owner: owner, Services: e.Services,
		Claimed: time.Unix(0, r.Claimed), Expires: time.Unix(0, r.Expires), Seq: r.Seq}, nil
}

// RefreshAfter is how old a cached answer may be before a resolution
// that serves it also refreshes it in the background.
const RefreshAfter = 5 * time.Second

// Resolver resolves names through a cache: a name is served from the
// cache until its record expires, and an answer older than RefreshAfter
// is refreshed in the background while the cached one is served. It is
// safe for concurrent use.
type Resolver struct {
	lookup  Lookup
	now     func() time.Time
	timeout time.Duration

	mu    sync.Mutex
	cache map[string]*cached
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
}

type cached struct {
	res        Resolved
	at         time.Time
	refreshing bool
}

// NewResolver makes a Resolver over lookup. now is the clock (time.Now
// when nil).
func NewResolver(lookup Lookup, now func() time.Time) *Resolver {
	if now == nil {
		now = time.Now
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Resolver{lookup: lookup, now: now, timeout: 10 * time.Second, cache: map[string]*cached{}, ctx: ctx, stop: stop}
}

// Close stops background refreshes and waits for them.
func (r *Resolver) Close() {
	r.stop()
	r.wg.Wait()
}

// Resolve returns what name resolves to.
func (r *Resolver) Resolve(ctx context.Context, name string) (Resolved, error) {
	if err := Validate(name); err != nil {
		return Resolved{}, err
	}
	now := r.now()
	r.mu.Lock()
	c := r.cache[name]
	if c != nil && now.Before(c.res.Expires) {
		res := c.res
		res.Cached, res.Age = true, now.Sub(c.at)
		if res.Age > RefreshAfter && !c.refreshing {
			c.refreshing = true
			r.wg.Add(1)
			go r.refresh(name)
		}
		r.mu.Unlock()
		return res, nil
	}
	r.mu.Unlock()
	return r.fetch(ctx, name)
}

// fetch resolves name from the ring and caches the answer.
func (r *Resolver) fetch(ctx context.Context, name string) (Resolved, error) {
	rec, err := r.lookup(ctx, Key(name))
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, record.ErrNotFound) {
			r.Forget(name)
			return Resolved{}, fmt.Errorf("%q: %w", name, ErrNotFound)
		}
		return Resolved{}, fmt.Errorf("resolve %q: %w", name, err)
	}
	res, err := FromRecord(name, rec)
	if err != nil {
		return Resolved{}, fmt.Errorf("resolve %q: %w", name, err)
	}
	r.mu.Lock()
	r.cache[name] = &cached{res: res, at: r.now()}
	r.mu.Unlock()
	return res, nil
}

func (r *Resolver) refresh(name string) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	if _, err := r.fetch(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
		// Keep serving the cached answer until it expires; try again on
		// the next resolution.
		r.mu.Lock()
		if c := r.cache[name]; c != nil {
			c.refreshing = false
		}
		r.mu.Unlock()
	}
}

// Forget drops name from the cache (after this peer claimed or released
// it, say).
func (r *Resolver) Forget(name string) {
	r.mu.Lock()
	delete(r.cache, name)
	r.mu.Unlock()
}

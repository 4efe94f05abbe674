package stunx

import (
	"container/list"
	"net/netip"
	"time"
)

// bucket is a token bucket driven by the times it is given, never by the
// wall clock.
type bucket struct {
	tokens float64
	last   time.Time
}

// refill adds the tokens earned since the last call, up to burst. A clock
// that steps back earns nothing and does not move last back.
func (b *bucket) refill(now time.Time, rate, burst float64) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens += d.Seconds() * rate
		if b.tokens > burst {
			b.tokens = burst
		}
		b.last = now
	}
}

// sourceEntry is one row of the limiter's table.
type sourceEntry struct {
	key netip.Addr
	b   bucket
}

// limiter bounds answers per source and in all. Its table of sources is
// bounded: when it is full, the source heard from least recently is
// forgotten. A forgotten source comes back with a full bucket, which is
// why the global bucket exists: a flood from many (spoofed) sources still
// gets at most the global rate of answers.
type limiter struct {
	cfg    ResponderConfig
	global bucket
	begun  bool
	lru    *list.List // of *sourceEntry, most recently heard first
	byKey  map[netip.Addr]*list.Element
}

func newLimiter(cfg ResponderConfig) *limiter {
	return &limiter{cfg: cfg, lru: list.New(), byKey: make(map[netip.Addr]*list.Element)}
}

// sourceKey is what the limiter counts a request against: the IPv4
// address, or the /64 of an IPv6 address, since one IPv6 host commonly
// has a whole /64 to send from.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is4() {
		return a
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.Addr()
}

// allow spends one token of src's bucket and one of the global bucket if
// both have one, and says which refused otherwise. A refused request
// spends nothing.
func (l *limiter) allow(src netip.Addr, now time.Time) (ok bool, reason string) {
	if !l.begun {
		l.global = bucket{tokens: l.cfg.GlobalBurst, last: now}
		l.begun = true
	}
	l.global.refill(now, l.cfg.GlobalRate, l.cfg.GlobalBurst)
	e := l.touch(sourceKey(src), now)
	e.b.refill(now, l.cfg.SourceRate, l.cfg.SourceBurst)
	if e.b.tokens < 1 {
		return false, ReasonSourceRate
	}
	if l.global.tokens < 1 {
		return false, ReasonGlobalRate
	}
	e.b.tokens--
	l.global.tokens--
	return true, ""
}

// touch finds or makes the entry of key and marks it most recently heard,
// forgetting the stalest entry if the table is full.
func (l *limiter) touch(key netip.Addr, now time.Time) *sourceEntry {
	if el, ok := l.byKey[key]; ok {
		l.lru.MoveToFront(el)
		return el.Value.(*sourceEntry)
	}
	if l.lru.Len() >= l.cfg.MaxSources {
		old := l.lru.Back()
		l.lru.Remove(old)
		delete(l.byKey, old.Value.(*sourceEntry).key)
	}
	e := &sourceEntry{key: key, b: bucket{tokens: l.cfg.SourceBurst, last: now}}
	l.byKey[key] = l.lru.PushFront(e)
	return e
}

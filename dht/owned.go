package dht

// Owned records kept up: claims this peer renews before their lease runs
// out (names, services), their release, and a fast read that takes the
// first valid answer.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/overlay"
)

// renewEvery is how often the claims this peer keeps up are looked at; a
// claim is renewed once less than half of its lease is left.
var renewEvery = 30 * time.Second

// Claim is Put for a key this peer keeps: the record is renewed for lease
// before half of it has run out, across restarts, until Release.
func (d *DHT) Claim(ctx context.Context, key, value []byte, lease time.Duration) (int, error) {
	if lease <= 0 {
		lease = DefaultTTL
	}
	rec, peers, err := d.claimRecord(ctx, key, value, lease)
	if err != nil {
		return 0, err
	}
	n, err := d.storeOnReplicas(rec, peers)
	if err != nil {
		return n, err
	}
	if err := d.store.KeepOwn(rec, lease); err != nil {
		return n, err
	}
	return n, nil
}

// Release ends this peer's claim of key at once: a signed release replaces
// the claim on every replica, and anyone may claim the key afterwards. It
// lives as long as the claim would have, so that no replica that missed it
// brings the claim back.
func (d *DHT) Release(ctx context.Context, key []byte) (int, error) {
	cur, peers, err := d.readRecord(ctx, key)
	if errors.Is(err, ErrNotFound) || (err == nil && cur.Released) {
		_ = d.store.DropOwn(key)
		return 0, fmt.Errorf("%q: %w", key, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	if !d.mine(cur) {
		owner, _ := cur.Publisher()
		return 0, fmt.Errorf("%q is held by %s, not this peer: %w", key, owner, record.ErrOwned)
	}
	now := time.Now()
	expires := time.Unix(0, max(cur.Expires, now.Add(time.Minute).UnixNano()))
	claimed := time.Unix(0, cur.Claimed)
	if cur.Claimed <= 0 {
		claimed = now // a version 1 record: the release needs a claim time
	}
	rel, err := record.NewRelease(key, max(uint64(now.UnixNano()), cur.Seq+1), claimed, expires, d.priv)
	if err != nil {
		return 0, err
	}
	if err := d.store.DropOwn(key); err != nil {
		return 0, err
	}
	return d.storeOnReplicas(rel, peers)
}

// Owned lists the claims this peer keeps up.
func (d *DHT) Owned() ([]record.Own, error) { return d.store.Owned() }

// Resolve returns the first valid, unreleased record of key that a replica
// answers with, without waiting for the others: one valid answer is
// enough for a signed record (IPNS waits for 16 of 20). It asks first the
// replicas the member list implies (guessReplicas: no lookup, one round
// trip), and only when none of them has the record, the replicas a ring
// lookup finds. ErrNotFound when every replica answered and none had it.
func (d *DHT) Resolve(ctx context.Context, key []byte) (*record.Record, error) {
	id := chord.HashID(key)
	if guess := d.guessReplicas(id); len(guess) > 0 {
		// A few are enough for a first answer, and asking all R costs
		// every one of them a stream for an answer that is not used.
		gctx, cancel := context.WithTimeout(ctx, guessTimeout)
		r, err := d.firstAnswer(gctx, guess[:min(len(guess), guessAsk)], key)
		cancel()
		if err == nil {
			return r, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	peers, _, err := d.replicas(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.firstAnswer(ctx, peers, key)
}

// guessTimeout bounds the first round of Resolve, on the replicas the
// member list implies, before the ring is asked.
const guessTimeout = 500 * time.Millisecond

// guessAsk is how many of the guessed replicas the first round asks.
const guessAsk = 3

// guessReplicas is the replica set of key as the member list sees it: the
// R live members, this peer included, that follow key on the ring. Every
// peer knows every member, so in a settled group this is the set a lookup
// would find, without the lookup's hops; while the group changes it may be
// off, and Resolve then asks the ring.
func (d *DHT) guessReplicas(key chord.ID) []peer.ID { return d.guessSuccessors(key, d.r) }

// guessSuccessors is the first n alive members from key on, as the member
// list places them on the ring.
func (d *DHT) guessSuccessors(key chord.ID, n int) []peer.ID {
	type pos struct {
		p  peer.ID
		id chord.ID
	}
	var ring []pos
	for _, m := range d.ov.Members().Members() {
		if m.Self || m.State == overlay.StateAlive {
			ring = append(ring, pos{m.ID, chord.HashID([]byte(m.ID))})
		}
	}
	slices.SortFunc(ring, func(a, b pos) int { return a.id.Cmp(b.id) })
	start, _ := slices.BinarySearchFunc(ring, key, func(x pos, k chord.ID) int { return x.id.Cmp(k) })
	var out []peer.ID
	for i := range min(n, len(ring)) {
		out = append(out, ring[(start+i)%len(ring)].p)
	}
	return out
}

// firstAnswer asks peers at once for key's record and returns the first
// valid, unreleased one; ErrNotFound when all answered without one.
func (d *DHT) firstAnswer(ctx context.Context, peers []peer.ID, key []byte) (*record.Record, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	found := make(chan *record.Record, len(peers))
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func(p peer.ID) {
			defer wg.Done()
			recs, err := d.fetch(p, record.KindValue, key)
			if err != nil {
				return
			}
			if r := pick(recs, key, nil); r != nil && !r.Released {
				found <- r
			}
		}(p)
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	select {
	case r := <-found:
		return r, nil
	case <-all:
		select {
		case r := <-found:
			return r, nil
		default:
			return nil, ErrNotFound
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// renewLoop keeps this peer's claims up: at start (a restart may find a
// lease run out) and every renewEvery after.
func (d *DHT) renewLoop() {
	t := time.NewTicker(renewEvery)
	defer t.Stop()
	first := time.After(2 * time.Second) // once the ring has been joined
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-first:
		case <-t.C:
		}
		d.renewOwned(time.Now())
	}
}

// renewOwned renews the claims with less than half their lease left.
func (d *DHT) renewOwned(now time.Time) {
	owned, err := d.store.Owned()
	if err != nil {
		d.log.Warn("claims kept up", "err", err)
	}
	for _, o := range owned {
		left := time.Unix(0, o.Rec.Expires).Sub(now)
		if left > o.Lease/2 {
			continue
		}
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		_, err := d.Claim(ctx, o.Rec.Key, o.Rec.Value, o.Lease)
		cancel()
		switch {
		case errors.Is(err, record.ErrOwned):
			// The lease ran out while this peer was away, and someone
			// else claimed the key: it is theirs now.
			d.log.Warn("lost a claim to another peer", "key", string(o.Rec.Key), "err", err)
			_ = d.store.DropOwn(o.Rec.Key)
		case err != nil:
			d.log.Info("renewing a claim failed; will retry", "key", string(o.Rec.Key), "left", left.Round(time.Second).String(), "err", err)
		default:
			d.log.Debug("renewed a claim", "key", string(o.Rec.Key))
		}
	}
}

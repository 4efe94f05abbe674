package dht

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

// Records on the ring: finding a key's replicas, and storing, reading and
// providing records on them.

// replicas returns the owner of key and the next R-1 peers, as a lookup
// sees them.
func (d *DHT) replicas(ctx context.Context, key chord.ID) ([]peer.ID, *chord.LookupResult, error) {
	res, err := d.Lookup(ctx, key)
	if err != nil {
		return nil, res, err
	}
	list := res.Succs
	if len(list) < d.r {
		// The answer came from a node whose successor list ends before R
		// peers past the owner: the successor lists of the owner, or of
		// the peers after it, complete the set.
		list = d.extend(ctx, list)
	}
	var out []peer.ID
	for _, p := range list {
		id, err := peer.Decode(p.Name)
		if err != nil || slices.Contains(out, id) {
			continue
		}
		out = append(out, id)
		if len(out) == d.r {
			break
		}
	}
	return out, res, nil
}

// extend completes a short replica set, list, with the successor list of
// its first entry, the owner. An owner killed a moment ago is still named
// by lookups but cannot answer, while the live replicas lie past the end
// of the list: then the other entries are asked, all at once, and the list
// of the first that answers completes the set. When none does, a lookup of
// the key just past the last entry finds the peers after it.
func (d *DHT) extend(ctx context.Context, list []chord.Peer) []chord.Peer {
	if len(list) == 0 {
		return list
	}
	complete := func(i int, succs []chord.Peer) []chord.Peer {
		return append(slices.Clone(list[:i+1]), succs...)
	}
	if succs, ok := d.successorsOf(list[0]); ok {
		return complete(0, succs)
	}
	answers := make([][]chord.Peer, len(list))
	var wg sync.WaitGroup
	for i := 1; i < len(list); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if succs, ok := d.successorsOf(list[i]); ok {
				answers[i] = succs
			}
		}()
	}
	wg.Wait()
	for i, succs := range answers {
		if succs != nil {
			return complete(i, succs)
		}
	}
	last := list[len(list)-1]
	res, err := d.Lookup(ctx, last.ID.Add(chord.PowerOfTwo(0)))
	if err != nil {
		return list
	}
	return append(slices.Clone(list), res.Succs...)
}

// successorsOf returns p's successor list (this peer's own, for itself);
// ok is false when p does not answer or answers that it is in no ring.
func (d *DHT) successorsOf(p chord.Peer) ([]chord.Peer, bool) {
	if p == d.self {
		var succs []chord.Peer
		var joined bool
		_ = d.do(func() { succs, joined = d.core.Succs(), d.core.Joined() })
		return succs, joined && len(succs) > 0
	}
	id, err := peer.Decode(p.Name)
	if err != nil {
		return nil, false
	}
	reply, err := d.roundTrip(id, &wireMsg{Op: uint8(chord.MsgGetState), Chord: chord.Message{Type: chord.MsgGetState, From: d.self}}, true)
	if err != nil || reply.Op != uint8(chord.MsgState) || len(reply.Chord.Nodes) == 0 {
		return nil, false
	}
	return reply.Chord.Nodes, true
}

// storeAt puts rec on every replica of its key and returns how many took it.
func (d *DHT) storeAt(ctx context.Context, rec *record.Record) (int, error) {
	if err := rec.Verify(time.Now()); err != nil {
		return 0, err
	}
	peers, _, err := d.replicas(ctx, rec.ChordID())
	if err != nil {
		return 0, err
	}
	return d.storeOnReplicas(rec, peers)
}

// storeOnReplicas puts rec on peers, its replicas, and returns how many
// took it.
func (d *DHT) storeOnReplicas(rec *record.Record, peers []peer.ID) (int, error) {
	held, lastErr, owned := d.storeEach(rec, peers)
	if owned != nil {
		// Replicas apply one rule, so the claim that one refused wins
		// on the others too once they hear of it.
		return len(held), owned
	}
	if len(held) == 0 {
		return 0, fmt.Errorf("no replica took the record: %w", lastErr)
	}
	return len(held), nil
}

// storeEach puts rec on peers at once and returns those that took it,
// the last refusal, and a refusal because another owner holds the key.
func (d *DHT) storeEach(rec *record.Record, peers []peer.ID) (held []peer.ID, lastErr, owned error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := d.storeOn(p, []*record.Record{rec})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lastErr = err
				if errors.Is(err, record.ErrOwned) {
					owned = err
				}
				return
			}
			held = append(held, p)
		}()
	}
	wg.Wait()
	return held, lastErr, owned
}

// storeOn sends records to p (itself included, locally).
func (d *DHT) storeOn(p peer.ID, recs []*record.Record) error {
	if p == d.h.ID() {
		for _, r := range recs {
			if _, err := d.store.Put(r, time.Now()); err != nil {
				return err
			}
		}
		return nil
	}
	reply, err := d.roundTrip(p, &wireMsg{Op: opStore, Records: recs}, true)
	if err != nil {
		return err
	}
	if reply.Op != opAck {
		return fmt.Errorf("%s answered a store with operation %d", p, reply.Op)
	}
	if reply.Err != "" {
		if strings.Contains(reply.Err, record.ErrOwned.Error()) {
			return fmt.Errorf("%s refused: %s: %w", p, reply.Err, record.ErrOwned)
		}
		return fmt.Errorf("%s refused: %s", p, reply.Err)
	}
	return nil
}

// Put claims key for this peer with value, or updates its claim, for ttl
// (DefaultTTL when zero), on the key's R replicas, and returns how many
// stored it. A key another peer holds is refused with an error wrapping
// record.ErrOwned that names the owner. The claim is not renewed: see
// Claim.
func (d *DHT) Put(ctx context.Context, key, value []byte, ttl time.Duration) (int, error) {
	rec, peers, err := d.claimRecord(ctx, key, value, ttl)
	if err != nil {
		return 0, err
	}
	return d.storeOnReplicas(rec, peers)
}

// claimRecord signs the next record of this peer's claim of key: the
// first claim, or an update that keeps the first claim's time. It also
// returns the key's replicas, found by the read, for the write.
func (d *DHT) claimRecord(ctx context.Context, key, value []byte, ttl time.Duration) (*record.Record, []peer.ID, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	cur, peers, err := d.readRecord(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	now := time.Now()
	seq, claimed := uint64(now.UnixNano()), now
	if cur != nil {
		mine := d.mine(cur)
		if !mine && !cur.Released {
			_, why := record.Replaces(&record.Record{Kind: record.KindValue, Key: key}, cur, now)
			return nil, nil, why
		}
		seq = max(seq, cur.Seq+1)
		if mine && !cur.Released && cur.Claimed > 0 {
			claimed = time.Unix(0, cur.Claimed)
		}
	}
	rec, err := record.NewClaim(key, value, seq, claimed, now.Add(ttl), d.priv)
	return rec, peers, err
}

// mine says whether r was signed by this peer.
func (d *DHT) mine(r *record.Record) bool {
	p, err := r.Publisher()
	return err == nil && p == d.h.ID()
}

// Get returns the record of key, ErrNotFound when there is none or its
// owner released it. See GetRecord.
func (d *DHT) Get(ctx context.Context, key []byte) (*record.Record, *chord.LookupResult, error) {
	r, res, err := d.GetRecord(ctx, key)
	if err == nil && r.Released {
		return nil, res, ErrNotFound
	}
	return r, res, err
}

// GetRecord returns the winning record of key, a release included: it asks
// every replica at once and keeps the record that replaces the others
// (record.Replaces), so a replica that missed a newer write (the owner of
// one half of a healed partition, say) cannot hide it; the replicas that
// answered with another record or none are sent the winner.
func (d *DHT) GetRecord(ctx context.Context, key []byte) (*record.Record, *chord.LookupResult, error) {
	peers, res, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, res, err
	}
	r, err := d.readFrom(key, peers)
	return r, res, err
}

// readRecord is GetRecord that also returns the replicas it asked (with
// ErrNotFound too), so that a write after it needs no second lookup.
func (d *DHT) readRecord(ctx context.Context, key []byte) (*record.Record, []peer.ID, error) {
	peers, _, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, nil, err
	}
	r, err := d.readFrom(key, peers)
	return r, peers, err
}

// readFrom asks peers, key's replicas, at once and returns the record
// that replaces the others, sending it to those that answered otherwise.
func (d *DHT) readFrom(key []byte, peers []peer.ID) (*record.Record, error) {
	type answer struct {
		p   peer.ID
		rec *record.Record
		ok  bool
	}
	var answers []answer
	for _, f := range d.fetchAll(peers, record.KindValue, key) {
		a := answer{p: f.p, ok: f.err == nil}
		if a.ok {
			a.rec = pick(f.recs, key, nil)
		}
		answers = append(answers, a)
	}
	var best *record.Record
	for _, a := range answers {
		if a.rec != nil {
			best = pick([]*record.Record{a.rec}, key, best)
		}
	}
	if best == nil {
		return nil, ErrNotFound
	}
	for _, a := range answers {
		if a.ok && (a.rec == nil || !bytes.Equal(a.rec.Sig, best.Sig)) {
			go func() { _ = d.storeOn(a.p, []*record.Record{best}) }()
		}
	}
	return best, nil
}

// pick folds the valid records of key in recs into best by the
// replacement rule.
func pick(recs []*record.Record, key []byte, best *record.Record) *record.Record {
	now := time.Now()
	for _, r := range recs {
		if string(r.Key) != string(key) || r.Verify(now) != nil {
			continue
		}
		if best == nil {
			best = r
		} else if ok, _ := record.Replaces(r, best, now); ok {
			best = r
		}
	}
	return best
}

// fetched is one replica's answer to a fetch.
type fetched struct {
	p    peer.ID
	recs []*record.Record
	err  error
}

// fetchAll fetches the records of kind for key from every peer at once.
func (d *DHT) fetchAll(peers []peer.ID, kind record.Kind, key []byte) []fetched {
	out := make([]fetched, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := d.fetch(p, kind, key)
			out[i] = fetched{p, recs, err}
		}()
	}
	wg.Wait()
	return out
}

func (d *DHT) fetch(p peer.ID, kind record.Kind, key []byte) ([]*record.Record, error) {
	if p == d.h.ID() {
		now := time.Now()
		switch kind {
		case record.KindProvider:
			return d.store.Providers(key, now)
		case record.KindMail, record.KindMailAck:
			return d.store.Mailbox(key, kind, now, maxBatch)
		}
		r, err := d.store.Lookup(key, now)
		if errors.Is(err, record.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*record.Record{r}, nil
	}
	reply, err := d.roundTrip(p, &wireMsg{Op: opFetch, Kind: kind, Key: key}, true)
	if err != nil {
		return nil, err
	}
	if reply.Op != opRecords {
		return nil, fmt.Errorf("%s answered a fetch with operation %d", p, reply.Op)
	}
	return reply.Records, nil
}

// AddProvider announces that this peer provides key (an infohash, say):
// a signed provider record on the key's replicas, valid for ttl.
func (d *DHT) AddProvider(ctx context.Context, key []byte, ttl time.Duration) (int, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	rec, err := record.New(record.KindProvider, key, nil, uint64(now.UnixNano()), now.Add(ttl), d.priv)
	if err != nil {
		return 0, err
	}
	return d.storeAt(ctx, rec)
}

// FindProviders returns the peers that announced key, from every replica
// that answers.
func (d *DHT) FindProviders(ctx context.Context, key []byte) ([]peer.ID, error) {
	peers, _, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, err
	}
	var out []peer.ID
	for _, p := range peers {
		recs, err := d.fetch(p, record.KindProvider, key)
		if err != nil {
			continue
		}
		for _, r := range recs {
			if r.Verify(time.Now()) != nil || string(r.Key) != string(key) {
				continue
			}
			if id, err := r.Publisher(); err == nil && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out, nil
}

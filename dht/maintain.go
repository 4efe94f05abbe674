package dht

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

// Records follow the ring:
//   - a new predecessor (a join) is sent every record this peer holds
//     outside its own arc (pred, self], so it can take over its share and
//     the replicas it now holds;
//   - the owner of each record pushes it to its R-1 successors whenever the
//     successor list changes and every maintainEvery, so copies lost with a
//     failed peer are made again;
//   - a graceful leave hands everything to the successor first (Close).
// Pushes send digests first and records only where they are missing or
// older, so a steady ring costs one small exchange per neighbour.

// handOver sends a new predecessor what it should now hold. Loop only.
func (d *DHT) handOver(p chord.Peer) {
	id, err := peer.Decode(p.Name)
	if err != nil || p.Name == d.self.Name {
		return
	}
	self := d.self.ID
	go func() {
		n, err := d.push(id, func(fn func(*record.Record) error) error {
			return d.store.InArc(self, p.ID, fn)
		})
		if err != nil {
			d.log.Debug("hand-over to new predecessor failed", "to", p.Name, "err", err)
		} else if n > 0 {
			d.log.Info("handed records to new predecessor", "to", p.Name, "records", n)
		}
	}()
}

// replicateSoon runs maintain shortly, once, after a burst of changes.
func (d *DHT) replicateSoon() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.replicatePending {
		return
	}
	d.replicatePending = true
	time.AfterFunc(time.Second, func() {
		d.mu.Lock()
		d.replicatePending = false
		d.mu.Unlock()
		select {
		case d.in <- d.maintain:
		case <-d.ctx.Done():
		}
	})
}

// maintain pushes the records this peer owns to its successors and drops
// expired ones. Loop only; the work runs in the background.
func (d *DHT) maintain() {
	if !d.core.Joined() {
		return
	}
	pred, succs := d.core.Pred(), d.core.Succs()
	alone := len(succs) > 0 && succs[0] == d.self
	if alone || (pred.IsZero() && !alone) {
		return
	}
	var targets []peer.ID
	for _, s := range succs {
		if s == d.self || len(targets) == d.r-1 {
			break
		}
		if id, err := peer.Decode(s.Name); err == nil {
			targets = append(targets, id)
		}
	}
	self := d.self.ID
	go func() {
		if !d.replicating.TryLock() {
			return // a round is still running
		}
		defer d.replicating.Unlock()
		if n, err := d.store.DeleteExpired(time.Now()); err == nil && n > 0 {
			d.log.Debug("dropped expired records", "count", n)
		}
		for _, t := range targets {
			if _, err := d.push(t, func(fn func(*record.Record) error) error {
				return d.store.InArc(pred.ID, self, fn)
			}); err != nil {
				d.log.Debug("replication push failed", "to", t, "err", err)
			}
		}
	}()
}

// push offers p every record iter yields, in batches: p says which it
// lacks, and only those are sent. It returns how many were sent.
func (d *DHT) push(p peer.ID, iter func(func(*record.Record) error) error) (int, error) {
	var batch []*record.Record
	sent := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		have := &wireMsg{Op: opHave}
		for _, r := range batch {
			have.Digests = append(have.Digests, digest{StoreKey: r.StoreKey(), Seq: r.Seq})
		}
		reply, err := d.roundTrip(p, have, true)
		if err != nil {
			return err
		}
		if reply.Op != opWant {
			return fmt.Errorf("%s answered digests with operation %d", p, reply.Op)
		}
		var want []*record.Record
		for _, i := range reply.Indices {
			if i < uint64(len(batch)) {
				want = append(want, batch[i])
			}
		}
		if len(want) == 0 {
			return nil
		}
		// A replica that holds another owner's claim of a key refuses
		// ours: the two are settled by the replacement rule, not by
		// hand-over, and the rest of the batch was taken.
		if err := d.storeOn(p, want); err != nil && !errors.Is(err, record.ErrOwned) {
			return err
		}
		sent += len(want)
		return nil
	}
	now := time.Now()
	err := iter(func(r *record.Record) error {
		if r.Verify(now) != nil {
			return nil // expired since stored: not worth sending
		}
		batch = append(batch, r)
		if len(batch) == maxBatch {
			return flush()
		}
		return nil
	})
	if err != nil {
		return sent, err
	}
	return sent, flush()
}

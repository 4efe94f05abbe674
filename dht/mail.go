package dht

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

// Mail: the replicas of a peer's mailbox key hold the messages left for
// it while it is away (record.KindMail) and its acknowledgements
// (record.KindMailAck). The records replicate and follow the ring like
// any other.

// Per-sender limits on the messages a peer hands this one for a mailbox
// (replication pushes between replicas are not counted).
const (
	mailRate  = 200 // messages a second
	mailBurst = 1000
	// mailSenders bounds the senders whose rate is remembered; the oldest
	// is forgotten past it.
	mailSenders = 4096
)

// ErrMailRate: a sender left more messages than mailRate allows.
var ErrMailRate = fmt.Errorf("dht: too many messages from one sender (limit %d a second)", mailRate)

type mailLimiter struct {
	mu    sync.Mutex
	by    map[peer.ID]*rate.Limiter
	order []peer.ID
}

// mailLimit refuses a batch in which remote, as the sender, leaves more
// messages than its rate allows.
func (d *DHT) mailLimit(remote peer.ID, recs []*record.Record, now time.Time) error {
	n := 0
	for _, r := range recs {
		if r.Kind != record.KindMail {
			continue
		}
		if p, err := r.Publisher(); err == nil && p == remote {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	l := &d.mail
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = make(map[peer.ID]*rate.Limiter)
	}
	lim := l.by[remote]
	if lim == nil {
		if len(l.order) >= mailSenders {
			delete(l.by, l.order[0])
			l.order = l.order[1:]
		}
		lim = rate.NewLimiter(mailRate, mailBurst)
		l.by[remote] = lim
		l.order = append(l.order, remote)
	}
	if !lim.AllowN(now, n) {
		return ErrMailRate
	}
	return nil
}

// StoreMail puts rec, a mail or acknowledgement record, on every replica
// of its mailbox and returns the replicas that hold it (a replica that had
// it already counts) and how many were asked.
func (d *DHT) StoreMail(ctx context.Context, rec *record.Record) (held []peer.ID, asked int, err error) {
	if err := rec.Verify(time.Now()); err != nil {
		return nil, 0, err
	}
	peers, _, err := d.replicas(ctx, rec.ChordID())
	if err != nil {
		return nil, 0, err
	}
	held, lastErr, _ := d.storeEach(rec, peers)
	if len(held) == 0 {
		return nil, len(peers), fmt.Errorf("no replica of the mailbox took the message: %w", lastErr)
	}
	return held, len(peers), nil
}

// MailCopy is a mailbox record and the replicas that returned it.
type MailCopy struct {
	Record  *record.Record
	Holders []peer.ID
}

// Mailbox returns the records of kind in the mailbox key from every
// replica that answers, each once, in StoreKey order, with the replicas
// that hold it; at most 256 of them come from each replica (what is left
// comes once those are acknowledged).
func (d *DHT) Mailbox(ctx context.Context, key []byte, kind record.Kind) ([]MailCopy, error) {
	peers, _, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, err
	}
	answers := d.fetchAll(peers, kind, key)
	byKey := map[string]*MailCopy{}
	now := time.Now()
	ok := 0
	for _, a := range answers {
		if a.err != nil {
			continue
		}
		ok++
		for _, r := range a.recs {
			if r.Kind != kind || string(r.Key) != string(key) || r.Verify(now) != nil {
				continue
			}
			sk := string(r.StoreKey())
			c := byKey[sk]
			if c == nil {
				c = &MailCopy{Record: r}
				byKey[sk] = c
			} else if r.Seq > c.Record.Seq {
				c.Record = r // a later acknowledgement
			}
			c.Holders = append(c.Holders, a.p)
		}
	}
	if ok == 0 && len(peers) > 0 {
		return nil, fmt.Errorf("no replica of the mailbox answered: %w", answers[0].err)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]MailCopy, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out, nil
}

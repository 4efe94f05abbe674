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

// Limits on the messages one peer hands this one for mailboxes: those it
// signed itself (it is their sender), and those it passes on (a replica
// pushing the mailboxes it holds, or a peer signing with keys made for a
// flood), which get more room, as a replica hands over many at once.
const (
	mailRate      = 200 // a sender's own messages, a second
	mailBurst     = 1000
	mailPassRate  = 2000 // messages passed on, a second
	mailPassBurst = 2 * record.MaxHeldPerSender
	// mailSenders bounds the peers whose rates are remembered; the oldest
	// is forgotten past it.
	mailSenders = 4096
)

// ErrMailRate: a peer handed over more messages than its rate allows.
var ErrMailRate = fmt.Errorf("dht: too many messages from one peer (limit %d a second of its own, %d passed on)", mailRate, mailPassRate)

type mailLimiter struct {
	mu    sync.Mutex
	by    map[mailFrom]*rate.Limiter
	order []mailFrom
}

// mailFrom is a peer handing messages over, and whether it signed them.
type mailFrom struct {
	p   peer.ID
	own bool
}

// mailLimit refuses a batch in which remote hands over more messages than
// its rates allow.
func (d *DHT) mailLimit(remote peer.ID, recs []*record.Record, now time.Time) error {
	own, passed := 0, 0
	for _, r := range recs {
		if r.Kind != record.KindMail {
			continue
		}
		if p, err := r.Publisher(); err == nil && p == remote {
			own++
		} else {
			passed++
		}
	}
	l := &d.mail
	l.mu.Lock()
	defer l.mu.Unlock()
	allow := func(k mailFrom, n int, r rate.Limit, burst int) bool {
		if n == 0 {
			return true
		}
		if l.by == nil {
			l.by = make(map[mailFrom]*rate.Limiter)
		}
		lim := l.by[k]
		if lim == nil {
			if len(l.order) >= mailSenders {
				delete(l.by, l.order[0])
				l.order = l.order[1:]
			}
			lim = rate.NewLimiter(r, burst)
			l.by[k] = lim
			l.order = append(l.order, k)
		}
		return lim.AllowN(now, n)
	}
	if !allow(mailFrom{remote, true}, own, mailRate, mailBurst) || !allow(mailFrom{remote, false}, passed, mailPassRate, mailPassBurst) {
		return ErrMailRate
	}
	return nil
}

// StoreMail puts rec, a mail or acknowledgement record, on every replica
// of its mailbox. It returns once enough of them hold it (a replica that
// had it already counts), or all have answered, with those that hold it
// and how many were asked; the stores to the others go on in the
// background, so that a dead replica costs no wait once enough are sure.
// The replicas are those the member list implies (guessReplicas: no
// lookup, whose hops through peers that just died cost seconds), and
// those a lookup finds when none of them takes it.
func (d *DHT) StoreMail(ctx context.Context, rec *record.Record, enough int) (held []peer.ID, asked int, err error) {
	if err := rec.Verify(time.Now()); err != nil {
		return nil, 0, err
	}
	guess := d.guessSuccessors(rec.ChordID(), 2*d.r)
	first := guess[:min(d.r, len(guess))]
	held, asked, err = d.storeMailOn(ctx, rec, enough, first)
	if ctx.Err() != nil || err == nil && len(held) >= min(enough, asked) {
		return held, asked, err
	}
	// Too few took it: replicas that just died may still be in the member
	// list. The members after them are the ones that take over once the
	// deaths are known, and the owner's replication moves the record
	// along the ring anyway.
	if extra := guess[len(first):]; len(extra) > 0 {
		h2, a2, _ := d.storeMailOn(ctx, rec, enough-len(held), extra)
		held, asked = append(held, h2...), asked+a2
		if len(held) >= enough {
			return held, asked, nil
		}
	}
	if len(held) > 0 {
		return held, asked, nil
	}
	peers, _, err := d.replicas(ctx, rec.ChordID())
	if err != nil {
		return nil, 0, err
	}
	return d.storeMailOn(ctx, rec, enough, peers)
}

// storeMailOn is StoreMail on peers.
func (d *DHT) storeMailOn(ctx context.Context, rec *record.Record, enough int, peers []peer.ID) (held []peer.ID, asked int, err error) {
	if len(peers) == 0 {
		return nil, 0, ErrNotJoined
	}
	type result struct {
		p   peer.ID
		err error
	}
	results := make(chan result, len(peers))
	for _, p := range peers {
		go func() { results <- result{p, d.storeOn(p, []*record.Record{rec})} }()
	}
	var lastErr error
	var grace <-chan time.Time
	for range peers {
		select {
		case r := <-results:
			if r.err != nil {
				lastErr = r.err
				continue
			}
			held = append(held, r.p)
			if len(held) >= enough && grace == nil {
				// A moment for the other live replicas to be counted.
				grace = time.After(mailGrace)
			}
		case <-grace:
			return held, len(peers), nil
		case <-ctx.Done():
			if len(held) > 0 {
				return held, len(peers), nil
			}
			return nil, len(peers), ctx.Err()
		}
	}
	if len(held) == 0 {
		return nil, len(peers), fmt.Errorf("no replica of the mailbox took the message: %w", lastErr)
	}
	return held, len(peers), nil
}

// mailGrace: how long a mailbox write or read waits for more replicas
// once it has what it needs.
const mailGrace = 100 * time.Millisecond

// MailCopy is a mailbox record and the replicas that returned it.
type MailCopy struct {
	Record  *record.Record
	Holders []peer.ID
}

// Mailbox returns the records of kind in the mailbox key from the
// replicas that answer first (see mailGrace), each once, in StoreKey
// order, with the replicas that hold it; at most 256 of them come from
// each replica (what is left comes once those are acknowledged). It asks
// the replicas the member list implies, then, when none answers, those a
// lookup finds.
func (d *DHT) Mailbox(ctx context.Context, key []byte, kind record.Kind) ([]MailCopy, error) {
	id := chord.HashID(key)
	if guess := d.guessReplicas(id); len(guess) > 0 {
		gctx, cancel := context.WithTimeout(ctx, 2*guessTimeout)
		out, err := d.mailboxOn(gctx, key, kind, guess)
		cancel()
		if err == nil || ctx.Err() != nil {
			return out, err
		}
	}
	peers, _, err := d.replicas(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.mailboxOn(ctx, key, kind, peers)
}

// mailboxOn is Mailbox on peers.
func (d *DHT) mailboxOn(ctx context.Context, key []byte, kind record.Kind, peers []peer.ID) ([]MailCopy, error) {
	// The first answer and those within mailGrace of it: a replica that
	// is down (or slow) costs no timeout. A message only a late replica
	// holds comes at the next collection; the recipient holds back what
	// comes after it meanwhile.
	results := make(chan fetched, len(peers))
	for _, p := range peers {
		go func() {
			recs, err := d.fetch(p, kind, key)
			results <- fetched{p, recs, err}
		}()
	}
	var answers []fetched
	var grace <-chan time.Time
collect:
	for range peers {
		select {
		case f := <-results:
			answers = append(answers, f)
			if f.err == nil && grace == nil {
				grace = time.After(mailGrace)
			}
		case <-grace:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
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
		if len(answers) == 0 {
			return nil, fmt.Errorf("no replica of the mailbox answered: %w", ctx.Err())
		}
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

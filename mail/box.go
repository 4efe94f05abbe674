package mail

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Box is a peer's inbox and outbox, in a bbolt file of its home:
//   - inbox: the messages delivered, in the order they came, numbered;
//   - seen: (sender, Seq) of every message delivered, so a second copy of
//     one (from another replica, or direct and then from the mailbox) is
//     dropped;
//   - chains: per sender, the Seq up to which every message came (what
//     may be acknowledged), and what has been;
//   - held: messages that came before their predecessor, held back until
//     it comes; above: those let out without it (see ReleaseHeld);
//   - sent: per recipient, the last Seq used, so the next message names
//     its predecessor;
//   - pending: messages left in a recipient's mailbox, until it
//     acknowledges them or they expire (then a notice goes to the inbox).
type Box struct {
	db *bolt.DB
}

var (
	bInbox   = []byte("inbox")
	bSeen    = []byte("seen")
	bChains  = []byte("chains")
	bSent    = []byte("sent")
	bPending = []byte("pending")
	bHeld    = []byte("held")  // (sender, Seq) -> Entry: past a gap, held back
	bAbove   = []byte("above") // (sender, Seq) -> Prev, when let out: past a gap
)

// OpenBox opens or creates the box at path.
func OpenBox(path string) (*Box, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("mail box %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bInbox, bSeen, bChains, bSent, bPending, bHeld, bAbove} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("mail box %s: %w", path, err)
	}
	return &Box{db: db}, nil
}

// Close closes the file.
func (b *Box) Close() error { return b.db.Close() }

// Entry is one message of the inbox, or a notice about a message sent.
type Entry struct {
	N        uint64    `json:"n"`
	ID       string    `json:"id"`
	From     string    `json:"from,omitempty"`
	To       string    `json:"to,omitempty"` // notices: the recipient of the message they are about
	Seq      uint64    `json:"seq,omitempty"`
	Prev     uint64    `json:"prev,omitempty"` // the sender's message before this one
	Sent     time.Time `json:"sent"`
	Received time.Time `json:"received"`
	Via      string    `json:"via"` // "direct", "mailbox" or "notice"
	Text     string    `json:"text,omitempty"`
	FileName string    `json:"file_name,omitempty"`
	Data     []byte    `json:"data,omitempty"`
	Trace    []string  `json:"trace,omitempty"`
}

// chain is what a box knows of one sender's messages.
type chain struct {
	Upto  uint64 `json:"upto"`  // every message of the sender up to this Seq came
	Acked uint64 `json:"acked"` // acknowledged to the mailbox up to this Seq
}

func seenKey(from peer.ID, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(from), seq)
}

// Arrival is a message that came, how, and its trace lines.
type Arrival struct {
	D     *Delivered
	Via   string
	Trace []string
}

// Deliver files the messages that came, in one transaction, and returns
// how many were new: a copy of one that came before is dropped. A message
// whose predecessor (Prev) has not come yet is held back, and goes into
// the inbox after it, so that each sender's messages read in the order
// they were sent; ReleaseHeld lets it out if the predecessor never comes.
// held counts the new messages held back.
func (b *Box) Deliver(as []Arrival, now time.Time) (fresh, held int, err error) {
	as = slices.Clone(as)
	slices.SortFunc(as, func(x, y Arrival) int {
		if c := cmp.Compare(x.D.From, y.D.From); c != 0 {
			return c
		}
		return cmp.Compare(x.D.Seq, y.D.Seq)
	})
	err = b.db.Update(func(tx *bolt.Tx) error {
		fresh, held = 0, 0
		seen := tx.Bucket(bSeen)
		for _, a := range as {
			d := a.D
			sk := seenKey(d.From, d.Seq)
			if seen.Get(sk) != nil {
				continue
			}
			fresh++
			e := Entry{
				ID: d.ID, From: d.From.String(), Seq: d.Seq, Prev: d.Prev, Sent: d.Sent, Received: now, Via: a.Via,
				Text: d.Text, FileName: d.FileName, Data: d.Data, Trace: a.Trace,
			}
			c, err := loadChain(tx, d.From)
			if err != nil {
				return err
			}
			if !follows(d.Prev, c.Upto, now) {
				if err := putJSON(tx.Bucket(bHeld), sk, e); err != nil {
					return err
				}
				if err := seen.Put(sk, make([]byte, 8)); err != nil {
					return err
				}
				held++
				continue
			}
			if err := file(tx, d.From, &e); err != nil {
				return err
			}
			c.Upto = d.Seq
			if err := advance(tx, d.From, &c, now); err != nil {
				return err
			}
			if err := putJSON(tx.Bucket(bChains), []byte(d.From), c); err != nil {
				return err
			}
		}
		return nil
	})
	return fresh, held, err
}

// follows says whether a message whose predecessor is prev may follow a
// sender's messages up to upto: prev came already (or there is none), or
// it is older than any message may live, so it will never come.
func follows(prev, upto uint64, now time.Time) bool {
	return prev <= upto || prev < uint64(max(0, now.Add(-MaxTTL).UnixNano()))
}

// file puts e, a message from from, in the inbox under the next number.
func file(tx *bolt.Tx, from peer.ID, e *Entry) error {
	in := tx.Bucket(bInbox)
	n, err := in.NextSequence()
	if err != nil {
		return err
	}
	e.N = n
	if err := putJSON(in, binary.BigEndian.AppendUint64(nil, n), e); err != nil {
		return err
	}
	return tx.Bucket(bSeen).Put(seenKey(from, e.Seq), binary.BigEndian.AppendUint64(nil, n))
}

// advance moves c, from's chain, past the messages that now follow it:
// held ones go into the inbox; ones let out earlier (bAbove) only move
// the chain.
func advance(tx *bolt.Tx, from peer.ID, c *chain, now time.Time) error {
	held, above := tx.Bucket(bHeld), tx.Bucket(bAbove)
	prefix := []byte(from)
	next := func(b *bolt.Bucket) (k, v []byte) {
		k, v = b.Cursor().Seek(seenKey(from, c.Upto+1))
		if k == nil || len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
			return nil, nil
		}
		return k, v
	}
	for {
		hk, hv := next(held)
		ak, av := next(above)
		switch {
		case hk != nil && (ak == nil || bytes.Compare(hk, ak) < 0):
			var e Entry
			if err := json.Unmarshal(hv, &e); err != nil {
				return fmt.Errorf("mail box: held %x: %w", hk, err)
			}
			if !follows(e.Prev, c.Upto, now) {
				return nil
			}
			if err := held.Delete(hk); err != nil {
				return err
			}
			if err := file(tx, from, &e); err != nil {
				return err
			}
			c.Upto = e.Seq
		case ak != nil:
			if len(av) != 16 || !follows(binary.BigEndian.Uint64(av), c.Upto, now) {
				return nil
			}
			c.Upto = binary.BigEndian.Uint64(ak[len(prefix):])
			if err := above.Delete(ak); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// ReleaseHeld puts into the inbox the messages held back since before
// now-wait for a predecessor that has not come, and returns how many.
// They stay past the gap for acknowledgements: the missing message may
// yet come from a replica, and must not be acknowledged away.
func (b *Box) ReleaseHeld(now time.Time, wait time.Duration) (n int, err error) {
	err = b.db.Update(func(tx *bolt.Tx) error {
		n = 0
		held := tx.Bucket(bHeld)
		var keys [][]byte
		var es []Entry
		err := held.ForEach(func(k, v []byte) error {
			var e Entry
			if json.Unmarshal(v, &e) == nil && e.Received.Before(now.Add(-wait)) {
				keys = append(keys, bytes.Clone(k))
				es = append(es, e)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, k := range keys {
			if err := held.Delete(k); err != nil {
				return err
			}
			if err := file(tx, peer.ID(k[:len(k)-8]), &es[i]); err != nil {
				return err
			}
			v := binary.BigEndian.AppendUint64(nil, es[i].Prev)
			v = binary.BigEndian.AppendUint64(v, uint64(now.UnixNano()))
			if err := tx.Bucket(bAbove).Put(k, v); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// GiveUpGaps takes the messages missing before those let out at least
// after ago as lost: each such sender's chain moves past them, so that
// what follows may be acknowledged. Until then the replicas keep
// returning the sender's messages past the gap, which, beyond a batch,
// would hold back every sender after it in the mailbox. It returns the
// senders whose chains moved.
func (b *Box) GiveUpGaps(now time.Time, after time.Duration) (n int, err error) {
	err = b.db.Update(func(tx *bolt.Tx) error {
		n = 0
		above := tx.Bucket(bAbove)
		past := map[peer.ID]uint64{}
		var del [][]byte
		err := above.ForEach(func(k, v []byte) error {
			if len(k) <= 8 || len(v) != 16 || int64(binary.BigEndian.Uint64(v[8:])) > now.Add(-after).UnixNano() {
				return nil
			}
			from := peer.ID(bytes.Clone(k[:len(k)-8]))
			past[from] = max(past[from], binary.BigEndian.Uint64(k[len(k)-8:]))
			del = append(del, bytes.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range del {
			if err := above.Delete(k); err != nil {
				return err
			}
		}
		for from, seq := range past {
			c, err := loadChain(tx, from)
			if err != nil {
				return err
			}
			if seq <= c.Upto {
				continue
			}
			c.Upto = seq
			if err := advance(tx, from, &c, now); err != nil {
				return err
			}
			if err := putJSON(tx.Bucket(bChains), []byte(from), c); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

func loadChain(tx *bolt.Tx, from peer.ID) (chain, error) {
	var c chain
	if v := tx.Bucket(bChains).Get([]byte(from)); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			return chain{}, fmt.Errorf("mail box: the chain of %s: %w", from, err)
		}
	}
	return c, nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, enc)
}

// ToAck returns, per sender, the Seq up to which its messages came and
// are not yet acknowledged.
func (b *Box) ToAck() (map[peer.ID]uint64, error) {
	out := map[peer.ID]uint64{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bChains).ForEach(func(k, v []byte) error {
			var c chain
			if json.Unmarshal(v, &c) == nil && c.Upto > c.Acked {
				out[peer.ID(k)] = c.Upto
			}
			return nil
		})
	})
	return out, err
}

// AckedUpTo returns, per sender, the Seq up to which its messages were
// acknowledged.
func (b *Box) AckedUpTo() (map[peer.ID]uint64, error) {
	out := map[peer.ID]uint64{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bChains).ForEach(func(k, v []byte) error {
			var c chain
			if json.Unmarshal(v, &c) == nil && c.Acked > 0 {
				out[peer.ID(k)] = c.Acked
			}
			return nil
		})
	})
	return out, err
}

// Acked records that from's messages up to seq were acknowledged.
func (b *Box) Acked(from peer.ID, seq uint64) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bc := tx.Bucket(bChains)
		var c chain
		if v := bc.Get([]byte(from)); v != nil {
			_ = json.Unmarshal(v, &c)
		}
		c.Acked = max(c.Acked, seq)
		enc, err := json.Marshal(c)
		if err != nil {
			return err
		}
		return bc.Put([]byte(from), enc)
	})
}

// List returns up to limit inbox entries numbered after after.
func (b *Box) List(after uint64, limit int) ([]Entry, error) {
	var out []Entry
	err := b.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bInbox).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("mail box: entry %x: %w", k, err)
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Notice files a notice about a message this peer sent.
func (b *Box) Notice(p Pending, text string, now time.Time) (Entry, error) {
	var e Entry
	err := b.db.Update(func(tx *bolt.Tx) error {
		in := tx.Bucket(bInbox)
		n, _ := in.NextSequence()
		e = Entry{N: n, ID: p.ID, To: p.To, Seq: p.Seq, Sent: p.Sent, Received: now, Via: "notice", Text: text}
		enc, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return in.Put(binary.BigEndian.AppendUint64(nil, n), enc)
	})
	return e, err
}

// Next returns the Seq of the next message to to, and that of the one
// before it (0: none), and records it as used. Seqs grow with the clock,
// so that a box made anew (a lost home) still numbers after its old one.
func (b *Box) Next(to peer.ID, now time.Time) (seq, prev uint64, err error) {
	err = b.db.Update(func(tx *bolt.Tx) error {
		bs := tx.Bucket(bSent)
		if v := bs.Get([]byte(to)); len(v) == 8 {
			prev = binary.BigEndian.Uint64(v)
		}
		seq = max(uint64(max(now.UnixNano(), 1)), prev+1)
		return bs.Put([]byte(to), binary.BigEndian.AppendUint64(nil, seq))
	})
	return seq, prev, err
}

// Unsend gives back seq, the last Seq Next gave for to, when the message
// went nowhere: the next message names prev as its predecessor again, so
// that the recipient does not wait for one that will never come.
func (b *Box) Unsend(to peer.ID, seq, prev uint64) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bs := tx.Bucket(bSent)
		if v := bs.Get([]byte(to)); len(v) != 8 || binary.BigEndian.Uint64(v) != seq {
			return nil // another message went since
		}
		if prev == 0 {
			return bs.Delete([]byte(to))
		}
		return bs.Put([]byte(to), binary.BigEndian.AppendUint64(nil, prev))
	})
}

// Pending is a message left in a recipient's mailbox and not yet
// acknowledged.
type Pending struct {
	ID      string    `json:"id"`
	To      string    `json:"to"`
	Seq     uint64    `json:"seq"`
	Sent    time.Time `json:"sent"`
	Expires time.Time `json:"expires"`
	Holders []string  `json:"holders"`
}

func pendingKey(to string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(to), seq)
}

// AddPending records p.
func (b *Box) AddPending(p Pending) error {
	enc, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bPending).Put(pendingKey(p.To, p.Seq), enc)
	})
}

// Pending lists the messages awaiting acknowledgement.
func (b *Box) Pending() ([]Pending, error) {
	var out []Pending
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bPending).ForEach(func(k, v []byte) error {
			var p Pending
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("mail box: pending %x: %w", k, err)
			}
			out = append(out, p)
			return nil
		})
	})
	return out, err
}

// DropPending forgets p (acknowledged, or noticed as expired).
func (b *Box) DropPending(p Pending) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bPending).Delete(pendingKey(p.To, p.Seq))
	})
}

package mail

import (
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
)

// OpenBox opens or creates the box at path.
func OpenBox(path string) (*Box, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("mail box %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bInbox, bSeen, bChains, bSent, bPending} {
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
	// Above: messages that came past a gap, as (Seq, Prev) pairs.
	Above [][2]uint64 `json:"above,omitempty"`
}

// maxAbove bounds the messages a chain remembers past a gap.
const maxAbove = 4096

func seenKey(from peer.ID, seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(from), seq)
}

// Deliver files d, which came by via with the trace lines given, unless
// a copy of it came before: fresh is false then and the entry is the
// earlier one's number only.
func (b *Box) Deliver(d *Delivered, via string, trace []string, now time.Time) (e Entry, fresh bool, err error) {
	err = b.db.Update(func(tx *bolt.Tx) error {
		seen := tx.Bucket(bSeen)
		sk := seenKey(d.From, d.Seq)
		if v := seen.Get(sk); v != nil {
			e.N = binary.BigEndian.Uint64(v)
			return nil
		}
		in := tx.Bucket(bInbox)
		n, _ := in.NextSequence()
		e = Entry{
			N: n, ID: d.ID, From: d.From.String(), Seq: d.Seq, Sent: d.Sent, Received: now, Via: via,
			Text: d.Text, FileName: d.FileName, Data: d.Data, Trace: trace,
		}
		enc, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := in.Put(binary.BigEndian.AppendUint64(nil, n), enc); err != nil {
			return err
		}
		if err := seen.Put(sk, binary.BigEndian.AppendUint64(nil, n)); err != nil {
			return err
		}
		fresh = true
		return advance(tx.Bucket(bChains), d, now)
	})
	return e, fresh, err
}

// advance moves the sender's chain past d, and past what came before it
// across a gap that d fills. A predecessor older than MaxTTL has expired
// and will not come: it counts as come.
func advance(bc *bolt.Bucket, d *Delivered, now time.Time) error {
	var c chain
	if v := bc.Get([]byte(d.From)); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			c = chain{}
		}
	}
	if d.Seq > c.Upto && len(c.Above) < maxAbove {
		c.Above = append(c.Above, [2]uint64{d.Seq, d.Prev})
	}
	slices.SortFunc(c.Above, func(a, b [2]uint64) int { return cmp.Compare(a[0], b[0]) })
	gone := uint64(max(0, now.Add(-MaxTTL).UnixNano()))
	for len(c.Above) > 0 {
		l := c.Above[0]
		if l[0] <= c.Upto {
			c.Above = c.Above[1:]
			continue
		}
		if l[1] > c.Upto && l[1] >= gone {
			break // a gap: the message before l has not come
		}
		c.Upto = l[0]
		c.Above = c.Above[1:]
	}
	enc, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return bc.Put([]byte(d.From), enc)
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

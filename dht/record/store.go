package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/peer-overlay/peer/dht/chord"
)

// ErrNotFound: no unexpired record is stored for the key.
var ErrNotFound = errors.New("record not found")

var (
	bucketRecords = []byte("records") // StoreKey -> Marshal()
	bucketOwn     = []byte("own")     // key -> lease (8 bytes, ns) + Marshal(): claims this peer keeps up
	bucketMeta    = []byte("meta")
	keySchema     = []byte("schema")
)

// schemaVersion is written into new files and checked on Open.
const schemaVersion = 1

// openTimeout is how long Open waits for another process's lock.
const openTimeout = time.Second

// scanBatch is how many records a scan decodes per read transaction (a
// variable so that tests can make batches small).
var scanBatch = 256

// Store keeps records on disk in a bbolt file, filed under their StoreKey,
// so that iteration is in ring order. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the store at path (mode 0600). If another process
// holds the file, it fails after a second rather than waiting forever.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: openTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("record store %s: locked by another process (gave up after %v): %w", path, openTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("record store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v == nil {
			if err := meta.Put(keySchema, []byte{schemaVersion}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != schemaVersion {
			return fmt.Errorf("unsupported schema version %x (want %d)", v, schemaVersion)
		}
		if _, err := tx.CreateBucketIfNotExists(bucketOwn); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketRecords)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("record store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close closes the file. The Store must not be used afterwards.
func (s *Store) Close() error { return s.db.Close() }

// expired says whether r is expired at now.
func expired(r *Record, now time.Time) bool { return r.Expires <= now.UnixNano() }

// decodeStored decodes a value read from the records bucket.
func decodeStored(k, v []byte) (*Record, error) {
	r, err := Unmarshal(v)
	if err != nil {
		return nil, fmt.Errorf("record store: entry %x: %w", k, err)
	}
	return r, nil
}

// Put stores r if it passes Verify at now and wins against what is stored
// under its StoreKey (Replaces). It reports whether r was stored; an equal
// or lower Seq of the same publisher is (false, nil). A refused record
// returns Verify's error, or one wrapping ErrOwned when another owner
// holds the key.
func (s *Store) Put(r *Record, now time.Time) (stored bool, err error) {
	if err := r.Verify(now); err != nil {
		return false, err
	}
	sk, enc := r.StoreKey(), r.Marshal()
	var owned error
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		switch r.Kind {
		case KindMail:
			// A message its recipient acknowledged is not taken again, and
			// one sender fills at most MaxHeldPerSender of a mailbox.
			if acked(b, r, now) {
				return nil
			}
			if b.Get(sk) == nil && heldFrom(b, r, now) >= heldCap {
				owned = fmt.Errorf("record: %s already holds %d messages from this sender: %w", r.Key, heldCap, ErrMailboxFull)
				return nil
			}
		case KindMailAck:
			if err := dropAcked(b, r); err != nil {
				return err
			}
		}
		if v := b.Get(sk); v != nil {
			// An undecodable entry is damage; the verified record replaces it.
			if old, err := Unmarshal(v); err == nil {
				ok, why := Replaces(r, old, now)
				if !ok {
					owned = why
					return nil
				}
			}
		}
		stored = true
		return b.Put(sk, enc)
	})
	if err != nil {
		return false, fmt.Errorf("record store: put: %w", err)
	}
	return stored, owned
}

// MaxHeldPerSender bounds the messages of one sender that a replica holds
// in one mailbox: a flood fills its own share and no more.
const MaxHeldPerSender = 10000

// heldCap is MaxHeldPerSender, smaller in tests.
var heldCap = MaxHeldPerSender

// ErrMailboxFull: a sender has MaxHeldPerSender messages waiting in a
// mailbox already.
var ErrMailboxFull = errors.New("mailbox full for this sender")

// senderPrefix is the StoreKey prefix of r's publisher's messages in r's
// mailbox (r a mail record), or of sender's in key's.
func senderPrefix(key []byte, sender []byte) []byte {
	return append(storePrefix(key, KindMail), sender...)
}

// acked says whether the mailbox's owner acknowledged r, a mail record.
func acked(b *bolt.Bucket, r *Record, now time.Time) bool {
	from, err := r.Publisher()
	if err != nil {
		return false
	}
	v := b.Get(append(storePrefix(r.Key, KindMailAck), from...))
	if v == nil {
		return false
	}
	ack, err := Unmarshal(v)
	return err == nil && !expired(ack, now) && bytes.Equal(ack.Key, r.Key) && ack.Seq >= r.Seq
}

// heldFrom counts the live messages of r's sender in r's mailbox.
func heldFrom(b *bolt.Bucket, r *Record, now time.Time) int {
	from, err := r.Publisher()
	if err != nil {
		return 0
	}
	prefix := senderPrefix(r.Key, []byte(from))
	n := 0
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, _ = c.Next() {
		n++
	}
	return n
}

// dropAcked deletes the messages that ack, an acknowledgement, covers.
func dropAcked(b *bolt.Bucket, ack *Record) error {
	prefix := senderPrefix(ack.Key, ack.Value)
	var del [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != len(prefix)+8 {
			continue // another sender whose ID starts with this one's bytes
		}
		if binary.BigEndian.Uint64(k[len(prefix):]) > ack.Seq {
			break
		}
		del = append(del, bytes.Clone(k))
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Mailbox returns the unexpired records of kind (KindMail or KindMailAck)
// in the mailbox key, in StoreKey order (mail: by sender, then Seq), at
// most limit of them (all when limit <= 0).
func (s *Store) Mailbox(key []byte, kind Kind, now time.Time, limit int) ([]*Record, error) {
	if !kind.mailbox() {
		return nil, fmt.Errorf("record store: %s records are not kept in mailboxes", kind)
	}
	return s.listKind(key, kind, now, limit)
}

// Get returns the value record for key, or ErrNotFound if there is none,
// it has expired or its owner released it.
func (s *Store) Get(key []byte, now time.Time) (*Record, error) {
	r, err := s.Lookup(key, now)
	if err == nil && r.Released {
		return nil, ErrNotFound
	}
	return r, err
}

// Lookup is Get with releases: the owner's release of a key is returned
// as it is (Released set), so that a replica can pass it on.
func (s *Store) Lookup(key []byte, now time.Time) (*Record, error) {
	var r *Record
	err := s.db.View(func(tx *bolt.Tx) error {
		sk := storePrefix(key, KindValue)
		v := tx.Bucket(bucketRecords).Get(sk)
		if v == nil {
			return nil
		}
		var err error
		r, err = decodeStored(sk, v)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Checking the key guards against two keys with one SHA-1.
	if r == nil || expired(r, now) || !bytes.Equal(r.Key, key) {
		return nil, ErrNotFound
	}
	return r, nil
}

// Providers returns the unexpired provider records for key, ordered by
// publisher peer ID; none is not an error.
func (s *Store) Providers(key []byte, now time.Time) ([]*Record, error) {
	return s.listKind(key, KindProvider, now, 0)
}

// listKind returns up to limit (all when limit <= 0) unexpired records of
// kind for key, in StoreKey order.
func (s *Store) listKind(key []byte, kind Kind, now time.Time, limit int) ([]*Record, error) {
	prefix := storePrefix(key, kind)
	var out []*Record
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			r, err := decodeStored(k, v)
			if err != nil {
				return err
			}
			if !expired(r, now) && bytes.Equal(r.Key, key) {
				out = append(out, r)
				if limit > 0 && len(out) == limit {
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ForEach calls fn for every stored record, expired or not, in ring order
// (by StoreKey), and stops at fn's first error, returning it.
//
// Records are read in batches, and fn runs outside any transaction, so fn
// may call the Store's other methods; records put or deleted during the
// walk may or may not be seen.
func (s *Store) ForEach(fn func(*Record) error) error {
	return s.scan(nil, nil, fn)
}

// InArc calls fn for every stored record whose ChordID is in the clockwise
// arc (from, to], in clockwise order starting after from. The arc may wrap
// past zero; from == to means the whole ring. Otherwise it behaves like
// ForEach.
func (s *Store) InArc(from, to chord.ID, fn func(*Record) error) error {
	if from == to {
		// The whole ring, still in clockwise order after from.
		after := from.Add(chord.PowerOfTwo(0))
		if err := s.scan(after[:], nil, fn); err != nil {
			return err
		}
		return s.scan(nil, after[:], fn)
	}
	if from.Cmp(to) < 0 {
		// No wrap: IDs in [from+1, to].
		after := from.Add(chord.PowerOfTwo(0))
		return s.scan(after[:], upTo(to), fn)
	}
	// Wrap: (from, max] then [0, to].
	if from != maxID {
		after := from.Add(chord.PowerOfTwo(0))
		if err := s.scan(after[:], nil, fn); err != nil {
			return err
		}
	}
	return s.scan(nil, upTo(to), fn)
}

var maxID = func() (id chord.ID) {
	for i := range id {
		id[i] = 0xff
	}
	return id
}()

// upTo is the exclusive end of the StoreKeys whose ChordID is at most id:
// the ID after id, or nil (no end) when id is the largest.
func upTo(id chord.ID) []byte {
	if id == maxID {
		return nil
	}
	next := id.Add(chord.PowerOfTwo(0))
	return next[:]
}

// scan calls fn for the records with start <= StoreKey < end (nil start:
// from the first; nil end: to the last), decoding at most scanBatch per
// read transaction and calling fn between transactions.
func (s *Store) scan(start, end []byte, fn func(*Record) error) error {
	seek := start
	for {
		batch := make([]*Record, 0, scanBatch)
		var next []byte // where the next batch starts; nil when done
		err := s.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketRecords).Cursor()
			var k, v []byte
			if seek == nil {
				k, v = c.First()
			} else {
				k, v = c.Seek(seek)
			}
			for ; k != nil; k, v = c.Next() {
				if end != nil && bytes.Compare(k, end) >= 0 {
					return nil
				}
				if len(batch) == scanBatch {
					next = bytes.Clone(k)
					return nil
				}
				r, err := decodeStored(k, v)
				if err != nil {
					return err
				}
				batch = append(batch, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range batch {
			if err := fn(r); err != nil {
				return err
			}
		}
		if next == nil {
			return nil
		}
		seek = next
	}
}

// Has reports the Seq of the record stored under storeKey, expired or not.
func (s *Store) Has(storeKey []byte) (seq uint64, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get(storeKey)
		if v == nil {
			return nil
		}
		r, err := decodeStored(storeKey, v)
		if err != nil {
			return err
		}
		seq, ok = r.Seq, true
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return seq, ok, nil
}

// Delete removes the record stored under storeKey, if any.
func (s *Store) Delete(storeKey []byte) error {
	if len(storeKey) == 0 {
		return nil // bbolt refuses an empty key; nothing is stored under it
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).Delete(storeKey)
	})
	if err != nil {
		return fmt.Errorf("record store: delete: %w", err)
	}
	return nil
}

// DeleteExpired removes every record expired at now, and any entry that no
// longer decodes, and reports how many it removed.
func (s *Store) DeleteExpired(now time.Time) (int, error) {
	var doomed [][]byte
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		// Collect first: deleting under a moving cursor skips entries.
		err := b.ForEach(func(k, v []byte) error {
			if r, err := Unmarshal(v); err != nil || expired(r, now) {
				doomed = append(doomed, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("record store: delete expired: %w", err)
	}
	return len(doomed), nil
}

// Len is the number of stored records, expired or not.
func (s *Store) Len() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketRecords).Stats().KeyN
		return nil
	})
	return n, err
}

// Own is a claim this peer keeps up: its latest record and the lease it
// renews it for.
type Own struct {
	Rec   *Record
	Lease time.Duration
}

// KeepOwn remembers r as this peer's latest record of r.Key, to be renewed
// for lease before it runs out; it survives restarts.
func (s *Store) KeepOwn(r *Record, lease time.Duration) error {
	v := binary.BigEndian.AppendUint64(nil, uint64(lease))
	v = append(v, r.Marshal()...)
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOwn).Put(r.Key, v) })
	if err != nil {
		return fmt.Errorf("record store: keep own record: %w", err)
	}
	return nil
}

// DropOwn forgets this peer's claim of key.
func (s *Store) DropOwn(key []byte) error {
	if len(key) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketOwn).Delete(key) })
	if err != nil {
		return fmt.Errorf("record store: drop own record: %w", err)
	}
	return nil
}

// Owned lists the claims this peer keeps up, by key; an entry that does
// not decode is skipped (and reported in the error, after the others).
func (s *Store) Owned() ([]Own, error) {
	var out []Own
	var bad error
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOwn).ForEach(func(k, v []byte) error {
			if len(v) < 8 {
				bad = fmt.Errorf("record store: own entry %q: %d bytes: %w", k, len(v), ErrMalformed)
				return nil
			}
			r, err := Unmarshal(v[8:])
			if err != nil {
				bad = fmt.Errorf("record store: own entry %q: %w", k, err)
				return nil
			}
			out = append(out, Own{Rec: r, Lease: time.Duration(binary.BigEndian.Uint64(v[:8]))})
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, bad
}

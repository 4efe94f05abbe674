package record

import (
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/peer-overlay/peer/dht/chord"
)

// FuzzStoreEntry puts arbitrary bytes into the store file as the entry
// under an arbitrary key, as a damaged or tampered dht.db would hold, and
// runs every reader over it. None may panic; a read that fails says the
// entry is malformed; DeleteExpired removes an entry that does not decode,
// after which a full walk succeeds.
func FuzzStoreEntry(f *testing.F) {
	s, err := Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	s.db.NoSync = true // the file is scratch; fsync per input only slows the fuzzer
	for _, r := range codecSamples(f) {
		f.Add(r.StoreKey(), r.Marshal(), r.Key)
	}
	r := codecSamples(f)[0]
	f.Add(r.StoreKey(), []byte{codecVersion, 1, 0xff}, r.Key)
	f.Add([]byte{0}, []byte{}, []byte("k"))
	f.Fuzz(func(t *testing.T, k, v, key []byte) {
		if len(k) == 0 || len(k) > bolt.MaxKeySize {
			return // bbolt refuses these keys itself
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRecords)
			// Start from an empty bucket: only this input's entry.
			if err := tx.DeleteBucket(bucketRecords); err != nil {
				return err
			}
			if b, err = tx.CreateBucket(bucketRecords); err != nil {
				return err
			}
			return b.Put(k, v)
		})
		if err != nil {
			t.Fatal(err)
		}
		_, decodeErr := Unmarshal(v)
		decodes := decodeErr == nil
		checkErr := func(what string, err error) {
			t.Helper()
			if err == nil || errors.Is(err, ErrNotFound) {
				return
			}
			if decodes || (!errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge)) {
				t.Fatalf("%s: %v (entry decodes: %v)", what, err, decodes)
			}
		}
		if len(key) > 0 {
			_, err := s.Get(key, t0)
			checkErr("Get", err)
			_, err = s.Providers(key, t0)
			checkErr("Providers", err)
		}
		n := 0
		err = s.ForEach(func(*Record) error { n++; return nil })
		checkErr("ForEach", err)
		if err == nil && n != 1 {
			t.Fatalf("ForEach saw %d records, want 1", n)
		}
		var id chord.ID
		copy(id[:], k)
		checkErr("InArc", s.InArc(id, id, func(*Record) error { return nil }))
		checkErr("InArc", s.InArc(chord.ID{}, id, func(*Record) error { return nil }))
		seq, ok, err := s.Has(k)
		checkErr("Has", err)
		if err == nil && (!ok || !decodes) {
			t.Fatalf("Has: ok %v for an entry that decodes: %v", ok, decodes)
		}
		_ = seq
		removed, err := s.DeleteExpired(t0)
		if err != nil {
			t.Fatalf("DeleteExpired: %v", err)
		}
		if !decodes && removed != 1 {
			t.Fatalf("DeleteExpired removed %d entries, want the undecodable one", removed)
		}
		if err := s.ForEach(func(*Record) error { return nil }); err != nil {
			t.Fatalf("ForEach after DeleteExpired: %v", err)
		}
	})
}

package record

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"

	"github.com/peer-overlay/peer/dht/chord"
)

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func mustPut(t *testing.T, s *Store, r *Record, now time.Time, want bool) {
	t.Helper()
	got, err := s.Put(r, now)
	if err != nil {
		t.Fatalf("Put(%q seq %d): %v", r.Key, r.Seq, err)
	}
	if got != want {
		t.Fatalf("Put(%q seq %d) stored = %v, want %v", r.Key, r.Seq, got, want)
	}
}

func mustGetValue(t *testing.T, s *Store, key string, now time.Time) string {
	t.Helper()
	r, err := s.Get([]byte(key), now)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(r.Value)
}

func storeLen(t *testing.T, s *Store) int {
	t.Helper()
	n, err := s.Len()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestStoreReplaceRules(t *testing.T) {
	s, _ := openStore(t)
	alice, bob := testKey(t, 1), testKey(t, 2)
	exp := t0.Add(time.Hour)

	mustPut(t, s, mustNew(t, KindValue, "k", "v5", 5, exp, alice), t0, true)
	// The same record again, as from another replica: idempotent.
	mustPut(t, s, mustNew(t, KindValue, "k", "v5", 5, exp, alice), t0, false)
	// Equal seq with other contents does not replace.
	mustPut(t, s, mustNew(t, KindValue, "k", "v5-other", 5, exp.Add(time.Minute), alice), t0, false)
	// Lower seq does not replace.
	mustPut(t, s, mustNew(t, KindValue, "k", "v4", 4, exp, alice), t0, false)
	if got := mustGetValue(t, s, "k", t0); got != "v5" {
		t.Fatalf("value = %q, want v5", got)
	}
	// Higher seq replaces.
	mustPut(t, s, mustNew(t, KindValue, "k", "v6", 6, exp, alice), t0, true)
	if got := mustGetValue(t, s, "k", t0); got != "v6" {
		t.Fatalf("value = %q, want v6", got)
	}
	// Another publisher cannot take the key, whatever its seq: alice
	// owns it while her record lives.
	if ok, err := s.Put(mustNew(t, KindValue, "k", "bob7", 7, exp, bob), t0); ok || !errors.Is(err, ErrOwned) {
		t.Fatalf("bob's seq 7 over alice's key: stored %v, err %v; want a refusal wrapping ErrOwned", ok, err)
	}
	r, err := s.Get([]byte("k"), t0)
	if err != nil {
		t.Fatal(err)
	}
	aliceID, _ := peer.IDFromPrivateKey(alice)
	if p, _ := r.Publisher(); string(r.Value) != "v6" || p != aliceID {
		t.Fatalf("after bob's attempt: value %q from %v, want alice's v6", r.Value, p)
	}

	// Once the stored record has expired, any valid record replaces it,
	// whatever its seq.
	later := exp.Add(time.Minute)
	mustPut(t, s, mustNew(t, KindValue, "k", "fresh1", 1, later.Add(time.Hour), alice), later, true)
	if got := mustGetValue(t, s, "k", later); got != "fresh1" {
		t.Fatalf("value = %q, want fresh1", got)
	}
	if n := storeLen(t, s); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
}

func TestStorePutRefusesInvalid(t *testing.T) {
	s, _ := openStore(t)
	priv := testKey(t, 1)

	expired := mustNew(t, KindValue, "k", "v", 1, t0.Add(-time.Second), priv)
	if ok, err := s.Put(expired, t0); ok || !errors.Is(err, ErrExpired) {
		t.Fatalf("Put(expired) = %v, %v; want ErrExpired", ok, err)
	}
	tampered := mustNew(t, KindValue, "k", "v", 1, t0.Add(time.Hour), priv)
	tampered.Seq = 100
	if ok, err := s.Put(tampered, t0); ok || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Put(tampered) = %v, %v; want ErrBadSignature", ok, err)
	}
	far := mustNew(t, KindProvider, "k", "", 1, t0.Add(MaxTTL+MaxClockSkew+time.Second), priv)
	if ok, err := s.Put(far, t0); ok || !errors.Is(err, ErrExpiryTooFar) {
		t.Fatalf("Put(far future) = %v, %v; want ErrExpiryTooFar", ok, err)
	}
	if n := storeLen(t, s); n != 0 {
		t.Fatalf("refused records were stored: Len = %d", n)
	}
}

func TestStoreGetNotFound(t *testing.T) {
	s, _ := openStore(t)
	priv := testKey(t, 1)
	if _, err := s.Get([]byte("missing"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	mustPut(t, s, mustNew(t, KindValue, "k", "v", 1, t0.Add(time.Hour), priv), t0, true)
	if got := mustGetValue(t, s, "k", t0.Add(time.Hour-time.Nanosecond)); got != "v" {
		t.Fatalf("value = %q", got)
	}
	if _, err := s.Get([]byte("k"), t0.Add(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(expired) = %v, want ErrNotFound", err)
	}
	// A provider record is not a value.
	mustPut(t, s, mustNew(t, KindProvider, "p", "", 1, t0.Add(time.Hour), priv), t0, true)
	if _, err := s.Get([]byte("p"), t0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(provider-only key) = %v, want ErrNotFound", err)
	}
}

func TestStoreProviders(t *testing.T) {
	s, _ := openStore(t)
	exp := t0.Add(time.Hour)
	var want []peer.ID
	for seed := uint64(1); seed <= 3; seed++ {
		priv := testKey(t, seed)
		mustPut(t, s, mustNew(t, KindProvider, "file", fmt.Sprintf("addr%d", seed), 1, exp, priv), t0, true)
		id, _ := peer.IDFromPrivateKey(priv)
		want = append(want, id)
	}
	// Neighbours that must not leak in: a value record for the same key,
	// and providers of other keys (one of them from the same publishers).
	mustPut(t, s, mustNew(t, KindValue, "file", "v", 1, exp, testKey(t, 1)), t0, true)
	mustPut(t, s, mustNew(t, KindProvider, "other", "", 1, exp, testKey(t, 1)), t0, true)
	mustPut(t, s, mustNew(t, KindProvider, "other", "", 1, exp, testKey(t, 4)), t0, true)
	// A provider refreshing with a higher seq replaces only its own entry.
	mustPut(t, s, mustNew(t, KindProvider, "file", "addr2-new", 2, exp, testKey(t, 2)), t0, true)

	got, err := s.Providers([]byte("file"), t0)
	if err != nil {
		t.Fatal(err)
	}
	var gotIDs []peer.ID
	for _, r := range got {
		if r.Kind != KindProvider || string(r.Key) != "file" {
			t.Fatalf("Providers(file) returned %v record for %q", r.Kind, r.Key)
		}
		id, err := r.Publisher()
		if err != nil {
			t.Fatal(err)
		}
		gotIDs = append(gotIDs, id)
		if id == want[1] && string(r.Value) != "addr2-new" {
			t.Fatalf("publisher 2's record was not replaced: %q", r.Value)
		}
	}
	slices.Sort(want)
	if !slices.Equal(gotIDs, want) {
		t.Fatalf("Providers(file) = %v, want %v (sorted)", gotIDs, want)
	}
	if got, _ := s.Providers([]byte("other"), t0); len(got) != 2 {
		t.Fatalf("Providers(other) = %d records, want 2", len(got))
	}
	if got, err := s.Providers([]byte("nobody"), t0); err != nil || len(got) != 0 {
		t.Fatalf("Providers(nobody) = %v, %v", got, err)
	}

	// Expired ones are left out.
	mustPut(t, s, mustNew(t, KindProvider, "file", "", 1, t0.Add(time.Minute), testKey(t, 5)), t0, true)
	if got, _ := s.Providers([]byte("file"), t0); len(got) != 4 {
		t.Fatalf("before expiry: %d providers, want 4", len(got))
	}
	if got, _ := s.Providers([]byte("file"), t0.Add(2*time.Minute)); len(got) != 3 {
		t.Fatalf("after expiry: %d providers, want 3", len(got))
	}
}

// ringFixture fills a store with value and provider records for n random
// keys and returns their StoreKeys by ChordID.
func ringFixture(t *testing.T, s *Store, n int) map[chord.ID][][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	byID := make(map[chord.ID][][]byte)
	for i := range n {
		key := fmt.Sprintf("key-%d-%d", i, r.Uint64())
		recs := []*Record{mustNew(t, KindValue, key, "v", 1, t0.Add(time.Hour), testKey(t, 1))}
		for p := range r.IntN(3) {
			recs = append(recs, mustNew(t, KindProvider, key, "", 1, t0.Add(time.Hour), testKey(t, uint64(p+2))))
		}
		for _, rec := range recs {
			mustPut(t, s, rec, t0, true)
			byID[rec.ChordID()] = append(byID[rec.ChordID()], rec.StoreKey())
		}
	}
	for _, sks := range byID {
		slices.SortFunc(sks, bytes.Compare)
	}
	return byID
}

// expectArc is what InArc(from, to) should visit: StoreKeys of records in
// (from, to] (the whole ring if from == to), clockwise from just after from.
func expectArc(byID map[chord.ID][][]byte, from, to chord.ID) [][]byte {
	var ids []chord.ID
	for id := range byID {
		if from == to || chord.BetweenRightIncl(id, from, to) {
			ids = append(ids, id)
		}
	}
	start := from.Add(chord.PowerOfTwo(0))
	slices.SortFunc(ids, func(a, b chord.ID) int { return a.Sub(start).Cmp(b.Sub(start)) })
	var out [][]byte
	for _, id := range ids {
		out = append(out, byID[id]...)
	}
	return out
}

func collectArc(t *testing.T, s *Store, from, to chord.ID) [][]byte {
	t.Helper()
	var out [][]byte
	if err := s.InArc(from, to, func(r *Record) error {
		out = append(out, r.StoreKey())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameKeys(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

func TestStoreInArc(t *testing.T) {
	old := scanBatch
	scanBatch = 5 // cross many batch boundaries
	t.Cleanup(func() { scanBatch = old })

	s, _ := openStore(t)
	byID := ringFixture(t, s, 40)
	var ids []chord.ID
	for id := range byID {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, chord.ID.Cmp)
	var zero, top chord.ID
	for i := range top {
		top[i] = 0xff
	}
	mid := ids[len(ids)/2]

	cases := []struct {
		name     string
		from, to chord.ID
	}{
		{"no wrap, between records", ids[3], ids[17]},
		{"no wrap, adjacent records", ids[3], ids[4]},
		{"no wrap, empty", ids[3], ids[3].Add(chord.PowerOfTwo(0))},
		{"wrap around zero", ids[30], ids[5]},
		{"wrap, from the top", top, ids[5]},
		{"wrap, to zero", ids[30], zero},
		{"zero to top", zero, top},
		{"top to zero", top, zero},
		{"whole ring at a record", mid, mid},
		{"whole ring at zero", zero, zero},
		{"whole ring at top", top, top},
		{"whole ring off any record", mid.Add(chord.PowerOfTwo(3)), mid.Add(chord.PowerOfTwo(3))},
	}
	total := storeLen(t, s)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, want := collectArc(t, s, c.from, c.to), expectArc(byID, c.from, c.to)
			if !sameKeys(got, want) {
				t.Fatalf("InArc(%s, %s) visited %d records, want %d (or order differs)",
					c.from.Short(), c.to.Short(), len(got), len(want))
			}
			if c.from == c.to && len(got) != total {
				t.Fatalf("whole ring visited %d of %d records", len(got), total)
			}
		})
	}
	// The arc excludes from and includes to.
	got := collectArc(t, s, ids[3], ids[4])
	if !sameKeys(got, byID[ids[4]]) {
		t.Fatalf("(ids[3], ids[4]] = %x, want exactly ids[4]'s records", got)
	}
	// Random arcs against the brute-force answer.
	r := rand.New(rand.NewPCG(9, 10))
	for range 200 {
		var from, to chord.ID
		for i := range from {
			from[i], to[i] = byte(r.UintN(256)), byte(r.UintN(256))
		}
		if r.IntN(4) == 0 {
			from = ids[r.IntN(len(ids))]
		}
		if r.IntN(4) == 0 {
			to = ids[r.IntN(len(ids))]
		}
		if got, want := collectArc(t, s, from, to), expectArc(byID, from, to); !sameKeys(got, want) {
			t.Fatalf("InArc(%s, %s): %d records, want %d", from, to, len(got), len(want))
		}
	}
}

func TestStoreForEach(t *testing.T) {
	old := scanBatch
	scanBatch = 4
	t.Cleanup(func() { scanBatch = old })

	s, _ := openStore(t)
	byID := ringFixture(t, s, 25)
	var want [][]byte
	for _, sks := range byID {
		want = append(want, sks...)
	}
	slices.SortFunc(want, bytes.Compare)

	var got [][]byte
	if err := s.ForEach(func(r *Record) error {
		got = append(got, r.StoreKey())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !sameKeys(got, want) {
		t.Fatalf("ForEach visited %d records, want %d in StoreKey order", len(got), len(want))
	}

	// fn's error stops the walk and comes back.
	stop := errors.New("stop")
	n := 0
	err := s.ForEach(func(*Record) error {
		n++
		if n == 6 {
			return stop
		}
		return nil
	})
	if err != stop || n != 6 {
		t.Fatalf("ForEach = %v after %d calls, want stop after 6", err, n)
	}

	// fn may write to the store (no transaction is held around it).
	if err := s.ForEach(func(r *Record) error { return s.Delete(r.StoreKey()) }); err != nil {
		t.Fatal(err)
	}
	if n := storeLen(t, s); n != 0 {
		t.Fatalf("Len after deleting everything from ForEach = %d", n)
	}
}

func TestStoreHasDelete(t *testing.T) {
	s, _ := openStore(t)
	r := mustNew(t, KindProvider, "k", "", 9, t0.Add(time.Hour), testKey(t, 1))
	if _, ok, err := s.Has(r.StoreKey()); ok || err != nil {
		t.Fatalf("Has before Put = %v, %v", ok, err)
	}
	mustPut(t, s, r, t0, true)
	seq, ok, err := s.Has(r.StoreKey())
	if err != nil || !ok || seq != 9 {
		t.Fatalf("Has = %d, %v, %v; want 9, true", seq, ok, err)
	}
	// The value-record StoreKey of the same key is a different entry.
	if _, ok, _ := s.Has(storePrefix([]byte("k"), KindValue)); ok {
		t.Fatal("Has finds a value record that was never stored")
	}
	if err := s.Delete(r.StoreKey()); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Has(r.StoreKey()); ok {
		t.Fatal("Has after Delete")
	}
	if err := s.Delete(r.StoreKey()); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if err := s.Delete(nil); err != nil {
		t.Fatalf("Delete(nil): %v", err)
	}
	// After Delete, a lower seq is accepted again.
	mustPut(t, s, mustNew(t, KindProvider, "k", "", 1, t0.Add(time.Hour), testKey(t, 1)), t0, true)
}

func TestStoreDeleteExpired(t *testing.T) {
	s, _ := openStore(t)
	priv := testKey(t, 1)
	for i, ttl := range []time.Duration{time.Minute, 2 * time.Minute, time.Hour, 2 * time.Hour} {
		mustPut(t, s, mustNew(t, KindValue, fmt.Sprint("k", i), "v", 1, t0.Add(ttl), priv), t0, true)
		mustPut(t, s, mustNew(t, KindProvider, fmt.Sprint("k", i), "", 1, t0.Add(ttl), priv), t0, true)
	}
	n, err := s.DeleteExpired(t0)
	if err != nil || n != 0 {
		t.Fatalf("DeleteExpired(t0) = %d, %v; want 0", n, err)
	}
	n, err = s.DeleteExpired(t0.Add(2 * time.Minute)) // expiry is exclusive: 2m is gone
	if err != nil || n != 4 {
		t.Fatalf("DeleteExpired(+2m) = %d, %v; want 4", n, err)
	}
	if got := storeLen(t, s); got != 4 {
		t.Fatalf("Len = %d, want 4", got)
	}
	for _, key := range []string{"k0", "k1"} {
		if _, ok, _ := s.Has(storePrefix([]byte(key), KindValue)); ok {
			t.Fatalf("%s survived DeleteExpired", key)
		}
	}
	if got := mustGetValue(t, s, "k2", t0.Add(2*time.Minute)); got != "v" {
		t.Fatalf("k2 = %q", got)
	}
	n, err = s.DeleteExpired(t0.Add(3 * time.Hour))
	if err != nil || n != 4 || storeLen(t, s) != 0 {
		t.Fatalf("DeleteExpired(+3h) = %d, %v; Len %d", n, err, storeLen(t, s))
	}
}

func TestStorePersistence(t *testing.T) {
	s, path := openStore(t)
	priv := testKey(t, 1)
	mustPut(t, s, mustNew(t, KindValue, "k", "persisted", 3, t0.Add(time.Hour), priv), t0, true)
	mustPut(t, s, mustNew(t, KindProvider, "k", "addr", 1, t0.Add(time.Hour), priv), t0, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		t.Fatalf("store file mode %v is open to others", mode)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := mustGetValue(t, s2, "k", t0); got != "persisted" {
		t.Fatalf("after reopen: %q", got)
	}
	if ps, err := s2.Providers([]byte("k"), t0); err != nil || len(ps) != 1 || string(ps[0].Value) != "addr" {
		t.Fatalf("after reopen: providers %v, %v", ps, err)
	}
	if n := storeLen(t, s2); n != 2 {
		t.Fatalf("after reopen: Len = %d", n)
	}
	// The replacement rule still holds against what was on disk.
	mustPut(t, s2, mustNew(t, KindValue, "k", "older", 2, t0.Add(time.Hour), priv), t0, false)
}

func TestStoreOpenLocked(t *testing.T) {
	_, path := openStore(t)
	start := time.Now()
	s2, err := Open(path)
	if err == nil {
		s2.Close()
		t.Fatal("second Open of a held store succeeded")
	}
	if !strings.Contains(err.Error(), "locked") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error does not say the file is locked: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Open gave up after %v", d)
	}
}

func TestStoreOpenRejectsOtherSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte{schemaVersion + 1})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("Open accepted a file with another schema version")
	}
}

func TestStoreConcurrent(t *testing.T) {
	s, _ := openStore(t)
	const writers, each = 6, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			priv := testKey(t, uint64(w+1))
			for i := range each {
				r, err := New(KindProvider, []byte(fmt.Sprint("key", i%5)), nil, uint64(i), t0.Add(time.Hour), priv)
				if err != nil {
					errs <- err
					return
				}
				if _, err := s.Put(r, t0); err != nil {
					errs <- err
				}
				v, err := New(KindValue, []byte("shared"), []byte(fmt.Sprint(w, i)), uint64(w*each+i), t0.Add(time.Hour), priv)
				if err != nil {
					errs <- err
					return
				}
				// One writer owns the key; the others are refused.
				if _, err := s.Put(v, t0); err != nil && !errors.Is(err, ErrOwned) {
					errs <- err
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Providers([]byte(fmt.Sprint("key", i%5)), t0); err != nil {
					errs <- err
				}
				if _, err := s.Get([]byte("shared"), t0); err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
				}
				if err := s.ForEach(func(*Record) error { return nil }); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := storeLen(t, s); n != writers*5+1 {
		t.Fatalf("Len = %d, want %d", n, writers*5+1)
	}
	// The first writer to reach "shared" owns it, and its last write won.
	r, err := s.Get([]byte("shared"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq%each != each-1 {
		t.Fatalf("shared holds seq %d, not its owner's last write", r.Seq)
	}
}

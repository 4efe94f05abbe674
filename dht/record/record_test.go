package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
)

// t0 is the tests' "now".
var t0 = time.Unix(1_700_000_000, 0)

// testKey is a deterministic Ed25519 key.
func testKey(t testing.TB, seed uint64) crypto.PrivKey {
	t.Helper()
	var s [32]byte
	binary.BigEndian.PutUint64(s[:], seed)
	priv, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8(s))
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func mustNew(t testing.TB, kind Kind, key, value string, seq uint64, expires time.Time, priv crypto.PrivKey) *Record {
	t.Helper()
	r, err := New(kind, []byte(key), []byte(value), seq, expires, priv)
	if err != nil {
		t.Fatalf("New(%v, %q): %v", kind, key, err)
	}
	return r
}

func clone(r *Record) *Record {
	c := *r
	c.Key = bytes.Clone(r.Key)
	c.Value = bytes.Clone(r.Value)
	c.PubKey = bytes.Clone(r.PubKey)
	c.Sig = bytes.Clone(r.Sig)
	return &c
}

func sameRecord(a, b *Record) bool {
	return a.Kind == b.Kind && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value) &&
		a.Seq == b.Seq && a.Expires == b.Expires && a.Claimed == b.Claimed && a.Released == b.Released &&
		bytes.Equal(a.PubKey, b.PubKey) && bytes.Equal(a.Sig, b.Sig)
}

func TestSignVerifyRoundTrip(t *testing.T) {
	priv := testKey(t, 1)
	want, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []Kind{KindValue, KindProvider} {
		r := mustNew(t, kind, "some/key", "some value", 42, t0.Add(time.Hour), priv)
		if err := r.Verify(t0); err != nil {
			t.Fatalf("%v: Verify: %v", kind, err)
		}
		if r.Expires != t0.Add(time.Hour).UnixNano() || r.Seq != 42 || r.Kind != kind {
			t.Fatalf("%v: fields not as given: %+v", kind, r)
		}
		got, err := r.Publisher()
		if err != nil || got != want {
			t.Fatalf("%v: Publisher = %v, %v; want %v", kind, got, err, want)
		}
		if r.ChordID() != chord.HashID([]byte("some/key")) {
			t.Fatalf("%v: ChordID is not SHA-1 of the key", kind)
		}
		id := r.ChordID()
		wantSK := append(id[:], byte(kind))
		if kind == KindProvider {
			wantSK = append(wantSK, want...)
		}
		if sk := r.StoreKey(); !bytes.Equal(sk, wantSK) {
			t.Fatalf("%v: StoreKey = %x, want %x", kind, sk, wantSK)
		}
	}
	// An empty value is allowed for both kinds.
	if err := mustNew(t, KindProvider, "k", "", 1, t0.Add(time.Minute), priv).Verify(t0); err != nil {
		t.Fatalf("empty value: %v", err)
	}
}

// TestSignatureIsDomainSeparated checks that the signature is not over the
// bare fields, so it cannot be replayed as some other signed message.
func TestSignatureIsDomainSeparated(t *testing.T) {
	priv := testKey(t, 1)
	r := mustNew(t, KindValue, "k", "v", 1, t0.Add(time.Hour), priv)
	msg := r.signedBytes()
	if !bytes.HasPrefix(msg, []byte("peer-record-v1\x00")) {
		t.Fatalf("signed bytes %q lack the domain prefix", msg)
	}
	ok, err := priv.GetPublic().Verify(msg[len(signDomain):], r.Sig)
	if err != nil || ok {
		t.Fatalf("signature verifies without the domain prefix (ok=%v, err=%v)", ok, err)
	}
	// Length prefixes keep key/value boundaries unambiguous.
	ab := &Record{Kind: KindValue, Key: []byte("ab"), Value: []byte("c"), Seq: 1, Expires: 2}
	a := &Record{Kind: KindValue, Key: []byte("a"), Value: []byte("bc"), Seq: 1, Expires: 2}
	if bytes.Equal(ab.signedBytes(), a.signedBytes()) {
		t.Fatal("moving a byte between key and value does not change the signed bytes")
	}
}

func TestVerifyRefusals(t *testing.T) {
	priv, other := testKey(t, 1), testKey(t, 2)
	otherPub, err := crypto.MarshalPublicKey(other.GetPublic())
	if err != nil {
		t.Fatal(err)
	}
	good := mustNew(t, KindValue, "key", "value", 7, t0.Add(time.Hour), priv)

	cases := []struct {
		name   string
		mutate func(r *Record)
		now    time.Time
		want   error
		substr string
	}{
		{"tampered value", func(r *Record) { r.Value = []byte("valuf") }, t0, ErrBadSignature, "does not match"},
		{"value dropped", func(r *Record) { r.Value = nil }, t0, ErrBadSignature, ""},
		{"tampered seq", func(r *Record) { r.Seq++ }, t0, ErrBadSignature, ""},
		{"tampered key", func(r *Record) { r.Key = []byte("kez") }, t0, ErrBadSignature, ""},
		{"tampered kind", func(r *Record) { r.Kind = KindProvider }, t0, ErrBadSignature, ""},
		{"tampered expiry", func(r *Record) { r.Expires += int64(time.Second) }, t0, ErrBadSignature, ""},
		{"wrong public key", func(r *Record) { r.PubKey = otherPub }, t0, ErrBadSignature, ""},
		{"truncated signature", func(r *Record) { r.Sig = r.Sig[:len(r.Sig)-1] }, t0, ErrBadSignature, ""},
		{"flipped signature bit", func(r *Record) { r.Sig[3] ^= 0x10 }, t0, ErrBadSignature, ""},
		{"no signature", func(r *Record) { r.Sig = nil }, t0, ErrBadSignature, "no signature"},
		{"garbage public key", func(r *Record) { r.PubKey = []byte("not a key") }, t0, ErrMalformed, "bad public key"},
		{"no public key", func(r *Record) { r.PubKey = nil }, t0, ErrMalformed, "no public key"},
		{"non-canonical public key", func(r *Record) {
			// The same key with an unknown protobuf field (13: varint 1) after it.
			r.PubKey = append(r.PubKey, 13<<3, 1)
		}, t0, ErrMalformed, "bad public key"},
		{"unknown kind", func(r *Record) { r.Kind = 9 }, t0, ErrMalformed, "unknown kind 9"},
		{"kind zero", func(r *Record) { r.Kind = 0 }, t0, ErrMalformed, "unknown kind"},
		{"empty key", func(r *Record) { r.Key = nil }, t0, ErrMalformed, "empty key"},
		{"oversized key", func(r *Record) { r.Key = make([]byte, MaxKey+1) }, t0, ErrTooLarge, "key of 1025 bytes"},
		{"oversized value", func(r *Record) { r.Value = make([]byte, MaxValue+1) }, t0, ErrTooLarge, "value of"},
		{"oversized public key", func(r *Record) { r.PubKey = make([]byte, MaxPubKey+1) }, t0, ErrTooLarge, "public key of"},
		{"oversized signature", func(r *Record) { r.Sig = make([]byte, MaxSig+1) }, t0, ErrTooLarge, "signature of"},
		{"expired", func(*Record) {}, t0.Add(90 * time.Minute), ErrExpired, "expired 30m0s ago"},
		{"expires exactly now", func(*Record) {}, t0.Add(time.Hour), ErrExpired, "expired 0s ago"},
		{"expired long ago", func(r *Record) { r.Expires = math.MinInt64 }, t0, ErrExpired, "ago"},
		{"too far in the future", func(*Record) {}, t0.Add(time.Hour - MaxTTL - MaxClockSkew - time.Nanosecond), ErrExpiryTooFar, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := clone(good)
			c.mutate(r)
			err := r.Verify(c.now)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if c.substr != "" && !strings.Contains(err.Error(), c.substr) {
				t.Fatalf("Verify = %q, want it to mention %q", err, c.substr)
			}
		})
	}

	// The edges that are still fine.
	if err := good.Verify(t0.Add(time.Hour - time.Nanosecond)); err != nil {
		t.Fatalf("1ns before expiry: %v", err)
	}
	if err := good.Verify(t0.Add(time.Hour - MaxTTL - MaxClockSkew)); err != nil {
		t.Fatalf("exactly MaxTTL+MaxClockSkew ahead: %v", err)
	}
	// A different key's own record verifies; mutations above were on copies.
	if err := good.Verify(t0); err != nil {
		t.Fatalf("original was modified: %v", err)
	}
}

func TestNewRefuses(t *testing.T) {
	priv := testKey(t, 1)
	exp := t0.Add(time.Hour)
	cases := []struct {
		name       string
		kind       Kind
		key, value []byte
		expires    time.Time
		want       error
	}{
		{"oversized key", KindValue, make([]byte, MaxKey+1), nil, exp, ErrTooLarge},
		{"oversized value", KindValue, []byte("k"), make([]byte, MaxValue+1), exp, ErrTooLarge},
		{"empty key", KindValue, nil, []byte("v"), exp, ErrMalformed},
		{"unknown kind", 9, []byte("k"), nil, exp, ErrMalformed},
		{"no expiry", KindProvider, []byte("k"), nil, time.Time{}, ErrMalformed},
	}
	for _, c := range cases {
		if r, err := New(c.kind, c.key, c.value, 1, c.expires, priv); !errors.Is(err, c.want) {
			t.Errorf("%s: New = %v, %v; want %v", c.name, r, err, c.want)
		}
	}
	if _, err := New(KindValue, []byte("k"), nil, 1, exp, nil); err == nil {
		t.Error("New with no private key succeeded")
	}
	// The limits themselves are allowed.
	r, err := New(KindValue, make([]byte, MaxKey), make([]byte, MaxValue), 1, exp, priv)
	if err != nil {
		t.Fatalf("max-size record: %v", err)
	}
	if err := r.Verify(t0); err != nil {
		t.Fatalf("max-size record: %v", err)
	}
}

func TestNewCopiesInputs(t *testing.T) {
	key, value := []byte("key"), []byte("value")
	r, err := New(KindValue, key, value, 1, t0.Add(time.Hour), testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	key[0], value[0] = 'X', 'X'
	if err := r.Verify(t0); err != nil {
		t.Fatalf("record changed with its caller's buffers: %v", err)
	}
}

func TestStoreKeySortsByRingPosition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var recs []*Record
	for i := range 50 {
		kind := KindValue
		if r.IntN(2) == 0 {
			kind = KindProvider
		}
		key := []byte{byte(i), byte(r.UintN(256))}
		recs = append(recs, mustNew(t, kind, string(key), "", 1, t0.Add(time.Hour), testKey(t, uint64(r.IntN(3)))))
	}
	slices.SortFunc(recs, func(a, b *Record) int { return bytes.Compare(a.StoreKey(), b.StoreKey()) })
	for i := 1; i < len(recs); i++ {
		if recs[i-1].ChordID().Cmp(recs[i].ChordID()) > 0 {
			t.Fatalf("StoreKey order puts %s before %s", recs[i-1].ChordID(), recs[i].ChordID())
		}
	}
}

// codecSamples are valid records covering the edges of every field.
func codecSamples(t testing.TB) []*Record {
	priv := testKey(t, 5)
	exp := t0.Add(time.Hour)
	samples := []*Record{
		mustNew(t, KindValue, "k", "v", 0, exp, priv),
		mustNew(t, KindProvider, "provided/key", "", 1, exp, priv),
		mustNew(t, KindValue, "seq max", "x", math.MaxUint64, exp, priv),
		mustNew(t, KindValue, "before 1970", "x", 3, time.Unix(-5, 0), priv),
		mustNew(t, KindProvider, strings.Repeat("k", 200), strings.Repeat("a", 200), 1<<40, exp, priv),
	}
	big, err := New(KindValue, bytes.Repeat([]byte{0xff}, MaxKey), bytes.Repeat([]byte{0x80}, MaxValue), math.MaxUint64, time.Unix(0, math.MaxInt64), priv)
	if err != nil {
		t.Fatal(err)
	}
	claim, err := NewClaim([]byte("name:web"), []byte("v"), 2, t0, exp, priv)
	if err != nil {
		t.Fatal(err)
	}
	release, err := NewRelease([]byte("name:web"), 3, t0, exp, priv)
	if err != nil {
		t.Fatal(err)
	}
	bigClaim, err := NewClaim(bytes.Repeat([]byte{0xff}, MaxKey), bytes.Repeat([]byte{0x80}, MaxValue), math.MaxUint64, time.Unix(0, math.MaxInt64-1), time.Unix(0, math.MaxInt64), priv)
	if err != nil {
		t.Fatal(err)
	}
	return append(samples, big, claim, release, bigClaim)
}

func TestCodecRoundTrip(t *testing.T) {
	for i, r := range codecSamples(t) {
		b := r.Marshal()
		if len(b) > MaxEncoded {
			t.Fatalf("sample %d: %d bytes encoded, MaxEncoded %d", i, len(b), MaxEncoded)
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("sample %d: Unmarshal: %v", i, err)
		}
		if !sameRecord(got, r) {
			t.Fatalf("sample %d: round trip changed the record:\n got %+v\nwant %+v", i, got, r)
		}
		if again := got.Marshal(); !bytes.Equal(again, b) {
			t.Fatalf("sample %d: re-marshal differs", i)
		}
		// The decoded copy must not share memory with the input.
		for j := range b {
			b[j] ^= 0xff
		}
		if !sameRecord(got, r) {
			t.Fatalf("sample %d: decoded record aliases its input", i)
		}
	}
	// A decoded record still verifies.
	r := codecSamples(t)[0]
	got, err := Unmarshal(r.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(t0); err != nil {
		t.Fatalf("decoded record: %v", err)
	}
}

func TestMaxEncoded(t *testing.T) {
	if MaxEncoded > 20<<10 {
		t.Fatalf("MaxEncoded = %d, over 20 KiB", MaxEncoded)
	}
	r := &Record{
		Kind: KindProvider, Key: make([]byte, MaxKey), Value: make([]byte, MaxValue),
		Seq: math.MaxUint64, Expires: math.MinInt64,
		PubKey: make([]byte, MaxPubKey), Sig: make([]byte, MaxSig),
	}
	b := r.Marshal()
	if len(b) > MaxEncoded {
		t.Fatalf("largest record encodes to %d bytes, MaxEncoded %d", len(b), MaxEncoded)
	}
	if _, err := Unmarshal(b); err != nil {
		t.Fatalf("largest record: %v", err)
	}
}

// header is a version and kind byte followed by fields, for hand-built inputs.
func header(fields ...[]byte) []byte {
	b := []byte{codecVersion, byte(KindValue)}
	for _, f := range fields {
		b = append(b, f...)
	}
	return b
}

func uv(x uint64) []byte { return binary.AppendUvarint(nil, x) }

func TestUnmarshalRejects(t *testing.T) {
	valid := codecSamples(t)[1].Marshal()

	// Every proper prefix is truncated.
	for i := range len(valid) {
		if _, err := Unmarshal(valid[:i]); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%d of %d bytes: Unmarshal = %v, want ErrMalformed", i, len(valid), err)
		}
	}
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"unknown version 0", append([]byte{0}, valid[1:]...), ErrMalformed},
		{"unknown version 2", append([]byte{2}, valid[1:]...), ErrMalformed},
		{"longer than MaxEncoded", make([]byte, MaxEncoded+1), ErrTooLarge},
		// Declared lengths are checked before anything is read or allocated.
		{"key length over limit", header(uv(MaxKey + 1)), ErrTooLarge},
		{"value length over limit", header(uv(1), []byte("k"), uv(MaxValue+1)), ErrTooLarge},
		{"huge value length", header(uv(1), []byte("k"), uv(1<<62)), ErrTooLarge},
		{"public key length over limit", header(uv(1), []byte("k"), uv(0), uv(1), uv(2), uv(MaxPubKey+1)), ErrTooLarge},
		{"signature length over limit", header(uv(1), []byte("k"), uv(0), uv(1), uv(2), uv(0), uv(MaxSig+1)), ErrTooLarge},
		{"key length past the end", header(uv(5), []byte("abc")), ErrMalformed},
		{"non-minimal varint", header([]byte{0x81, 0x00}, []byte("k"), uv(0), uv(1), uv(2), uv(0), uv(0)), ErrMalformed},
		{"non-minimal zero", header(uv(1), []byte("k"), []byte{0x80, 0x00}, uv(1), uv(2), uv(0), uv(0)), ErrMalformed},
		{"varint over 64 bits", header(uv(1), []byte("k"), uv(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}, uv(2), uv(0), uv(0)), ErrMalformed},
		{"varint of 11 bytes", header(uv(1), []byte("k"), uv(0), bytes.Repeat([]byte{0x80}, 10), []byte{1}, uv(2), uv(0), uv(0)), ErrMalformed},
	}
	for _, c := range cases {
		if r, err := Unmarshal(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: Unmarshal = %+v, %v; want %v", c.name, r, err, c.want)
		}
	}
	// The hand-built shape itself is fine (so the cases above fail for the
	// reason they name), and the largest seq decodes.
	ok := header(uv(1), []byte("k"), uv(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, uv(2), uv(0), uv(0))
	r, err := Unmarshal(ok)
	if err != nil {
		t.Fatalf("hand-built record: %v", err)
	}
	if r.Seq != math.MaxUint64 || r.Expires != 1 || string(r.Key) != "k" {
		t.Fatalf("hand-built record decoded as %+v", r)
	}
}

// TestUnmarshalAllocatesLittleOnLies checks that a short input declaring a
// large field is refused without allocating the field.
func TestUnmarshalAllocatesLittleOnLies(t *testing.T) {
	in := header(uv(1), []byte("k"), uv(MaxValue))
	const runs = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range runs {
		if _, err := Unmarshal(in); err == nil {
			t.Fatal("accepted")
		}
	}
	runtime.ReadMemStats(&after)
	// The Record, the key and the error; never the 16 KiB value.
	if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 2048 {
		t.Fatalf("%d bytes allocated per refusal of a lying header", perRun)
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, r := range codecSamples(f) {
		f.Add(r.Marshal())
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion})
	f.Add(header(uv(1), []byte("k"), uv(0), uv(1), uv(2), uv(0), uv(0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Unmarshal(b)
		if err != nil {
			if r != nil {
				t.Fatalf("Unmarshal returned a record and an error: %v", err)
			}
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Unmarshal error %v is neither ErrMalformed nor ErrTooLarge", err)
			}
			return
		}
		if again := r.Marshal(); !bytes.Equal(again, b) {
			t.Fatalf("re-marshal differs:\n in %x\nout %x", b, again)
		}
		// Neither may panic on whatever decodes.
		_ = r.Verify(t0)
		_ = r.StoreKey()
	})
}

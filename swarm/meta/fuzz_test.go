package meta

import (
	"encoding/base32"
	"runtime"
	"strings"
	"testing"
)

// FuzzParseInfoHash: an infohash as a user or a magnet link spells it.
// What parses must print as 40 lowercase hex digits that parse back to
// the same hash; a 40-character input must be those digits in some case.
func FuzzParseInfoHash(f *testing.F) {
	h := sampleInfo().Hash()
	f.Add(h.String())
	f.Add(strings.ToUpper(h.String()))
	f.Add(base32.StdEncoding.EncodeToString(h[:]))
	f.Add(strings.ToLower(base32.StdEncoding.EncodeToString(h[:])))
	f.Add(strings.Repeat("=", 32))
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseInfoHash(s)
		if err != nil {
			if got != (InfoHash{}) {
				t.Fatalf("ParseInfoHash(%q) failed but returned %s", s, got)
			}
			return
		}
		if len(s) != 40 && len(s) != 32 {
			t.Fatalf("ParseInfoHash accepted %d characters", len(s))
		}
		if len(s) == 40 && strings.ToLower(s) != got.String() {
			t.Fatalf("ParseInfoHash(%q) = %s", s, got)
		}
		again, err := ParseInfoHash(got.String())
		if err != nil || again != got {
			t.Fatalf("%s does not parse back: %v", got, err)
		}
		b32 := base32.StdEncoding.EncodeToString(got[:])
		if again, err := ParseInfoHash(b32); err != nil || again != got {
			t.Fatalf("%s in base32 (%s) does not parse back: %v", got, b32, err)
		}
	})
}

// FuzzDecodeAllocs: DecodeInfo and ParseTorrent take untrusted bytes (a
// peer's metadata, a downloaded .torrent). Whatever they are given, they
// may allocate only a small multiple of the input, never in proportion to
// a length or count the input claims.
func FuzzDecodeAllocs(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
		info, _ := DecodeInfo(s)
		tb, _ := MarshalTorrent(info, 1700000000)
		f.Add(tb)
	}
	f.Add([]byte("d5:filesl"))
	f.Add([]byte("d4:info999999999:x"))
	f.Add([]byte("d4:pathl999999999:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		info, err1 := DecodeInfo(b)
		tor, err2 := ParseTorrent(b)
		runtime.ReadMemStats(&after)
		if alloc, bound := after.TotalAlloc-before.TotalAlloc, uint64(64*len(b)+1<<20); alloc > bound {
			t.Fatalf("decoding %d bytes allocated %d (bound %d); info %v, torrent %v", len(b), alloc, bound, err1, err2)
		}
		if err1 == nil && info.Validate() != nil {
			t.Fatal("DecodeInfo returned an info that does not validate")
		}
		if err2 == nil && tor.Info.Validate() != nil {
			t.Fatal("ParseTorrent returned an info that does not validate")
		}
	})
}

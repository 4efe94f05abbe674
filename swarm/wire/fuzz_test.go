package wire

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
)

// maxRealBitfield is the largest Bitfield a manifest can call for: one bit
// per piece, at most 1<<20 pieces (meta.MaxPieces).
const maxRealBitfield = (1 << 20) / 8

// FuzzReaderAllocs reads a stream whose frame headers may lie about their
// length. The Reader refuses an oversized frame before reading it, so the
// bytes it allocates stay within what the input holds plus one frame of
// the largest size the message types allow: never what a header claims.
func FuzzReaderAllocs(f *testing.F) {
	for _, m := range allMessages() {
		if enc := m.Append(nil); len(enc) < 4096 {
			f.Add(enc, uint32(0))
		}
	}
	lie := func(id ID, n uint32) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), byte(id))
	}
	f.Add(lie(Bitfield, 1<<31), uint32(0))
	f.Add(lie(Bitfield, maxRealBitfield+1), uint32(maxRealBitfield))
	f.Add(lie(PEX, maxPEXPayload+1), uint32(0))
	f.Add(lie(Piece, 1<<32-1), uint32(3))
	f.Add(lie(MetaData, 8+metaPieceSize+1), uint32(0))
	f.Fuzz(func(t *testing.T, data []byte, maxBitfield uint32) {
		mb := int(maxBitfield % (maxRealBitfield + 1))
		limit := max(maxPEXPayload, MaxMessage, 8+metaPieceSize, defaultMaxBitfield, mb)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := NewReader(bytes.NewReader(data), mb)
		frames := 0
		for {
			if _, err := r.ReadMessage(); err != nil {
				break
			}
			frames++
		}
		runtime.ReadMemStats(&after)
		// The read-ahead buffer, payload buffers (each either backed by input
		// bytes or refused on its header), and a Message per frame.
		bound := uint64(readBufferSize + 2*limit + 4*len(data) + 256*frames + 1<<20)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bound {
			t.Fatalf("reading %d bytes (%d frames, max bitfield %d) allocated %d bytes, bound %d", len(data), frames, mb, alloc, bound)
		}
	})
}

// FuzzBits checks a peer's bitfield as the swarm does, then works on it
// with indexes taken from the peer: CheckBits accepts exactly the
// ceil(n/8)-byte fields with clear spare bits, and no index, however wild,
// makes Has, Set or Clear panic or touch a bit outside the field.
func FuzzBits(f *testing.F) {
	f.Add([]byte{0xff, 0x80}, 9, -1)
	f.Add([]byte{0xff, 0xc0}, 9, 9)
	f.Add([]byte{}, 0, 0)
	f.Add([]byte{1}, 8, 1<<40)
	f.Fuzz(func(t *testing.T, b []byte, n, i int) {
		err := CheckBits(b, n)
		ok := n >= 0 && len(b) == (n+7)/8
		if ok && n%8 != 0 {
			ok = b[len(b)-1]&(0xff>>(n%8)) == 0
		}
		if ok != (err == nil) {
			t.Fatalf("CheckBits(%x, %d) = %v", b, n, err)
		}
		bits := Bits(bytes.Clone(b))
		count := bits.Count()
		if err == nil {
			// A checked field has no bit at or past n.
			for k := n; k < 8*len(b); k++ {
				if bits.Has(k) {
					t.Fatalf("bit %d of %d set in a checked field", k, n)
				}
			}
			if count > n {
				t.Fatalf("%d bits set of %d", count, n)
			}
		}
		was := bits.Has(i)
		inRange := i >= 0 && i < 8*len(b)
		if was && !inRange {
			t.Fatalf("Has(%d) true in a %d-byte field", i, len(b))
		}
		bits.Set(i)
		if bits.Has(i) != inRange {
			t.Fatalf("Set(%d) in a %d-byte field: Has %v", i, len(b), bits.Has(i))
		}
		if want := count + btoi(inRange && !was); bits.Count() != want {
			t.Fatalf("Set(%d): count %d, want %d", i, bits.Count(), want)
		}
		bits.Clear(i)
		if bits.Has(i) {
			t.Fatalf("Clear(%d) left the bit set", i)
		}
		if want := count - btoi(was); bits.Count() != want {
			t.Fatalf("Clear(%d): count %d, want %d", i, bits.Count(), want)
		}
		// NewBits takes the manifest's piece count, never a peer's number.
		if pieces := n % (1<<20 + 1); true {
			if nb := NewBits(pieces); len(nb) != (max(pieces, 0)+7)/8 || nb.Count() != 0 || CheckBits(nb, max(pieces, 0)) != nil {
				t.Fatalf("NewBits(%d) is %d bytes with %d bits set", pieces, len(nb), nb.Count())
			}
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

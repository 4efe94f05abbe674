package wire

import (
	"encoding/binary"
	"fmt"
	mathbits "math/bits"
)

// Bits is a piece bitfield in BEP 3 bit order: piece 0 is the high bit of
// byte 0. A Bits made for n pieces is ceil(n/8) bytes long; the spare bits
// of the last byte stay zero as long as only indexes below n are set.
type Bits []byte

// NewBits returns an all-clear bitfield for n pieces.
func NewBits(n int) Bits {
	if n < 0 {
		n = 0
	}
	return make(Bits, (n+7)/8)
}

// inRange reports whether bit i exists in b.
func (b Bits) inRange(i int) bool {
	return i >= 0 && i>>3 < len(b)
}

// Has reports whether bit i is set; it is false when i is out of range.
func (b Bits) Has(i int) bool {
	return b.inRange(i) && b[i>>3]&(0x80>>(i&7)) != 0
}

// Set sets bit i. It does nothing when i is out of range, so an index taken
// from a peer's message cannot make it panic (callers should still check
// i against the piece count: Bits only knows its length in bytes).
func (b Bits) Set(i int) {
	if b.inRange(i) {
		b[i>>3] |= 0x80 >> (i & 7)
	}
}

// Clear clears bit i. It does nothing when i is out of range.
func (b Bits) Clear(i int) {
	if b.inRange(i) {
		b[i>>3] &^= 0x80 >> (i & 7)
	}
}

// Count returns the number of bits set.
func (b Bits) Count() int {
	n := 0
	for len(b) >= 8 {
		n += mathbits.OnesCount64(binary.LittleEndian.Uint64(b))
		b = b[8:]
	}
	for _, c := range b {
		n += mathbits.OnesCount8(c)
	}
	return n
}

// CheckBits verifies a bitfield received for n pieces: it must be exactly
// ceil(n/8) bytes long with the spare bits at the end of the last byte
// zero. Errors wrap ErrBadBitfield.
func CheckBits(b []byte, n int) error {
	if n < 0 {
		return fmt.Errorf("%w: negative piece count %d", ErrBadBitfield, n)
	}
	if want := (n + 7) / 8; len(b) != want {
		return fmt.Errorf("%w: %d bytes for %d pieces, want %d", ErrBadBitfield, len(b), n, want)
	}
	if spare := n & 7; spare != 0 {
		if mask := byte(0xff) >> spare; b[len(b)-1]&mask != 0 {
			return fmt.Errorf("%w: spare bits set after piece %d", ErrBadBitfield, n-1)
		}
	}
	return nil
}

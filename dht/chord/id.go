// Package chord is the deterministic core of the Chord ring: identifiers,
// successor lists, fingers, stabilization and rectify, with no goroutines,
// sockets, clock or global random source inside. This file holds the
// identifier space: 160-bit points on a ring of size 2^160.
package chord

import (
	"bytes"
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
)

// IDBytes is the length of an identifier: SHA-1's output.
const IDBytes = sha1.Size

// IDBits is the number of bits of an identifier, and of fingers.
const IDBits = IDBytes * 8

// ID is a point on the ring, big-endian.
type ID [IDBytes]byte

// HashID is SHA-1 of b: a peer's ID from its peer ID bytes, a key's from
// the key.
func HashID(b []byte) ID { return ID(sha1.Sum(b)) }

// ParseID reads 40 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDBytes {
		return id, fmt.Errorf("chord ID %q: want %d hex digits", s, 2*IDBytes)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chord ID %q: %w", s, err)
	}
	return id, nil
}

func (a ID) String() string { return hex.EncodeToString(a[:]) }

// Short is the first 8 hex digits, for logs.
func (a ID) Short() string { return hex.EncodeToString(a[:4]) }

// Cmp orders identifiers as unsigned integers (big-endian bytes).
func (a ID) Cmp(b ID) int { return bytes.Compare(a[:], b[:]) }

// words splits an identifier into its top 32 bits and two 64-bit words.
func (a ID) words() (hi uint32, mid, lo uint64) {
	return binary.BigEndian.Uint32(a[0:4]), binary.BigEndian.Uint64(a[4:12]), binary.BigEndian.Uint64(a[12:20])
}

func fromWords(hi uint32, mid, lo uint64) ID {
	var out ID
	binary.BigEndian.PutUint32(out[0:4], hi)
	binary.BigEndian.PutUint64(out[4:12], mid)
	binary.BigEndian.PutUint64(out[12:20], lo)
	return out
}

// Add returns a+b mod 2^160.
func (a ID) Add(b ID) ID {
	ah, am, al := a.words()
	bh, bm, bl := b.words()
	lo, c := bits.Add64(al, bl, 0)
	mid, c := bits.Add64(am, bm, c)
	return fromWords(ah+bh+uint32(c), mid, lo)
}

// Sub returns a-b mod 2^160: the clockwise distance from b to a.
func (a ID) Sub(b ID) ID {
	ah, am, al := a.words()
	bh, bm, bl := b.words()
	lo, c := bits.Sub64(al, bl, 0)
	mid, c := bits.Sub64(am, bm, c)
	return fromWords(ah-bh-uint32(c), mid, lo)
}

// PowerOfTwo returns 2^k mod 2^160, for k in [0, 160).
func PowerOfTwo(k int) ID {
	var out ID
	if k < 0 || k >= IDBits {
		panic(fmt.Sprintf("chord: 2^%d is outside the identifier space", k))
	}
	out[IDBytes-1-k/8] = 1 << (k % 8)
	return out
}

// FingerStart is where finger k of n begins: n + 2^k mod 2^160.
func (a ID) FingerStart(k int) ID { return a.Add(PowerOfTwo(k)) }

// Between reports whether x lies strictly inside the clockwise arc from a
// to b, the open interval (a, b). When a == b the arc is the whole ring but
// a itself, as Chord needs for a ring of one node.
func Between(x, a, b ID) bool {
	if a == b {
		return x != a
	}
	// Distances from a clockwise: x is inside when 0 < d(x) < d(b).
	dx, db := x.Sub(a), b.Sub(a)
	return dx != (ID{}) && dx.Cmp(db) < 0
}

// BetweenRightIncl reports whether x lies in the half-open arc (a, b]:
// the arc a key must fall in for b to be its successor after a.
func BetweenRightIncl(x, a, b ID) bool {
	return x == b || Between(x, a, b)
}

// LeadingZeros counts the leading zero bits of a; for a clockwise distance
// it says how many hops of a finger table's halving remain (160 - it).
func (a ID) LeadingZeros() int {
	for i, b := range a {
		if b != 0 {
			return i*8 + bits.LeadingZeros8(b)
		}
	}
	return IDBits
}

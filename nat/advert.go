package nat

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Advert is what a peer tells its group about its reachability, in
// membership metadata: every member runs the election and chooses paths
// from these, so they all hold the same inputs.
type Advert struct {
	Kind          Kind
	PortPreserved bool
	// Reachable: other members have dialed this peer directly (an inbound
	// connection that was not relayed), so unsolicited inbound works.
	Reachable bool
	// Supernode: the peer holds the supernode role now (the incumbency the
	// election's hysteresis reads).
	Supernode bool
	// Mapped is the public address of its QUIC socket as STUN saw it, if
	// known.
	Mapped netip.AddrPort
	// UptimeSec is its uptime, rounded down to a power of two seconds (so
	// the advert changes 17 times in its first day and a half, then once
	// every few days, not every second).
	UptimeSec int64
	Cores     int
	MemMiB    int
	UploadBps int64 // 0: uncapped
	// Vouches are the members this peer has reached with a fresh TCP
	// handshake at the public address they advertise (VouchTag of each,
	// sorted, at most MaxVouches): the dial-back that lets a claim of
	// public reachability count in the election.
	Vouches []uint32
}

// MaxVouches bounds an advert's vouches.
const MaxVouches = 12

// VouchTag names a peer in a vouch: the first 4 bytes of SHA-256 of its
// ID.
func VouchTag(id string) uint32 {
	h := sha256.Sum256([]byte(id))
	return binary.BigEndian.Uint32(h[:4])
}

// Equal reports whether two adverts say the same.
func (a Advert) Equal(b Advert) bool {
	return a.Kind == b.Kind && a.PortPreserved == b.PortPreserved && a.Reachable == b.Reachable &&
		a.Supernode == b.Supernode && a.Mapped == b.Mapped && a.UptimeSec == b.UptimeSec &&
		a.Cores == b.Cores && a.MemMiB == b.MemMiB && a.UploadBps == b.UploadBps && slices.Equal(a.Vouches, b.Vouches)
}

// vouchesTag reports whether a vouches for the member whose ID has this
// tag (VouchTag).
func (a Advert) vouchesTag(tag uint32) bool {
	_, ok := slices.BinarySearch(a.Vouches, tag)
	return ok
}

// Encoding: a version byte, a kind byte, a flags byte, the mapped address
// (a length byte, 0, 4 or 16 address bytes, then a 2-byte port when the
// length is not 0), then uptime, cores, memory and upload as uvarints,
// then a count byte and that many 4-byte vouch tags (a reader takes an
// advert that ends before the count as having none).
// Bytes after those are fields of a later version, which a reader skips.
const (
	advertVersion = 1
	flagPortPres  = 1 << 0
	flagReachable = 1 << 1
	flagSupernode = 1 << 2
	// MaxAdvertSize bounds an encoded advert (it travels in the 512 bytes
	// of metadata beside the addresses).
	MaxAdvertSize = 128
)

// ErrBadAdvert is what a malformed advert decodes to.
var ErrBadAdvert = errors.New("nat: malformed reachability advert")

// Encode appends a's encoding to b.
func (a Advert) Encode(b []byte) []byte {
	var flags byte
	if a.PortPreserved {
		flags |= flagPortPres
	}
	if a.Reachable {
		flags |= flagReachable
	}
	if a.Supernode {
		flags |= flagSupernode
	}
	b = append(b, advertVersion, byte(a.Kind), flags)
	if a.Mapped.IsValid() {
		ip := a.Mapped.Addr().Unmap()
		raw := ip.AsSlice()
		b = append(b, byte(len(raw)))
		b = append(b, raw...)
		b = binary.BigEndian.AppendUint16(b, a.Mapped.Port())
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(max(a.UptimeSec, 0)))
	b = binary.AppendUvarint(b, uint64(max(a.Cores, 0)))
	b = binary.AppendUvarint(b, uint64(max(a.MemMiB, 0)))
	b = binary.AppendUvarint(b, uint64(max(a.UploadBps, 0)))
	// The count is always written, so that fields a later version adds
	// after the vouches have a fixed place.
	vs := a.Vouches[:min(len(a.Vouches), MaxVouches)]
	b = append(b, byte(len(vs)))
	for _, v := range vs {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	return b
}

// DecodeAdvert reads an advert. Unknown later fields are skipped; a kind
// this version does not know reads as Unknown.
func DecodeAdvert(b []byte) (Advert, error) {
	var a Advert
	if len(b) > MaxAdvertSize {
		return a, fmt.Errorf("%w: %d bytes, limit %d", ErrBadAdvert, len(b), MaxAdvertSize)
	}
	if len(b) < 4 {
		return a, fmt.Errorf("%w: %d bytes", ErrBadAdvert, len(b))
	}
	if b[0] != advertVersion {
		return a, fmt.Errorf("%w: version %d", ErrBadAdvert, b[0])
	}
	a.Kind = Kind(b[1])
	if a.Kind < Unknown || a.Kind > Hard {
		a.Kind = Unknown
	}
	flags := b[2]
	a.PortPreserved = flags&flagPortPres != 0
	a.Reachable = flags&flagReachable != 0
	a.Supernode = flags&flagSupernode != 0
	n := int(b[3])
	b = b[4:]
	switch n {
	case 0:
	case 4, 16:
		if len(b) < n+2 {
			return Advert{}, fmt.Errorf("%w: truncated address", ErrBadAdvert)
		}
		ip, _ := netip.AddrFromSlice(b[:n])
		port := binary.BigEndian.Uint16(b[n:])
		if port == 0 || !ip.IsValid() || ip.IsUnspecified() {
			return Advert{}, fmt.Errorf("%w: address %s:%d", ErrBadAdvert, ip, port)
		}
		a.Mapped = netip.AddrPortFrom(ip.Unmap(), port)
		b = b[n+2:]
	default:
		return Advert{}, fmt.Errorf("%w: address of %d bytes", ErrBadAdvert, n)
	}
	var vals [4]uint64
	for i := range vals {
		v, k := binary.Uvarint(b)
		if k <= 0 {
			return Advert{}, fmt.Errorf("%w: truncated numbers", ErrBadAdvert)
		}
		vals[i], b = v, b[k:]
	}
	const maxInt = 1 << 40 // beyond any honest value; keeps int conversions sane
	for _, v := range vals {
		if v > maxInt {
			return Advert{}, fmt.Errorf("%w: number %d out of range", ErrBadAdvert, v)
		}
	}
	a.UptimeSec, a.Cores, a.MemMiB, a.UploadBps = int64(vals[0]), int(vals[1]), int(vals[2]), int64(vals[3])
	if len(b) > 0 {
		n := int(b[0])
		if n > MaxVouches || len(b) < 1+4*n {
			return Advert{}, fmt.Errorf("%w: %d vouches in %d bytes", ErrBadAdvert, n, len(b)-1)
		}
		for i := range n {
			a.Vouches = append(a.Vouches, binary.BigEndian.Uint32(b[1+4*i:]))
		}
		if !slices.IsSorted(a.Vouches) {
			return Advert{}, fmt.Errorf("%w: vouches not sorted", ErrBadAdvert)
		}
	}
	return a, nil
}

// RoundUptime rounds an uptime down to a power of two seconds (0 for
// none).
func RoundUptime(sec int64) int64 {
	if sec <= 0 {
		return 0
	}
	p := int64(1)
	for p*2 <= sec {
		p *= 2
	}
	return p
}

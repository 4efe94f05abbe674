package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
)

// Node metadata gossiped by memberlist: the peer's listen addresses, so that
// every member can dial every other one by peer ID without asking anyone,
// whether it is leaving, and tagged fields that later layers add (NAT
// reachability, the supernode role, relay addresses).
//
// Encoding (version 2): version byte, flags byte, then fields, each a
// uvarint tag, a uvarint length and that many bytes. Tag 1 is an address
// (a binary multiaddr), repeated; every other tag is a field a reader that
// does not know it skips, so a new field never breaks an older peer.
// memberlist caps metadata at 512 bytes: addresses go first, then the other
// fields in the order given, each kept only if it fits whole.
//
// Version 1 (no tags: every entry an address) is still read.

const (
	metaVersion   = 2
	metaVersionV1 = 1
)

// metaLeaving marks a peer that is leaving on purpose. memberlist v0.7.0
// does not tell its delegates a leave from a failure (the state it passes
// is never set), so a leaving peer says so in its metadata first.
const metaLeaving = 1 << 0

// Field tags. Tags are never reused; a reader skips those it does not know.
const (
	tagAddr = 1
	// MetaTagReach is the NAT layer's reachability advert (nat.Advert).
	MetaTagReach = 2
)

// MetaField is a tagged field of a member's metadata other than an
// address: Value is opaque to the overlay, and its layer decodes it.
type MetaField struct {
	Tag   uint64
	Value []byte
}

// nodeMeta is what a member advertises.
type nodeMeta struct {
	addrs   []ma.Multiaddr
	leaving bool
	// fields are the tagged fields besides addresses, in order: those this
	// peer sets, or, decoded, every other field found (unknown ones too).
	fields []MetaField
}

// field returns the first field with tag, if any.
func (m nodeMeta) field(tag uint64) ([]byte, bool) {
	for _, f := range m.fields {
		if f.Tag == tag {
			return f.Value, true
		}
	}
	return nil, false
}

// ErrBadMeta is returned for node metadata that does not decode.
var ErrBadMeta = errors.New("overlay: malformed node metadata")

func encodeMeta(m nodeMeta, limit int) []byte {
	var flags byte
	if m.leaving {
		flags |= metaLeaving
	}
	out := []byte{metaVersion, flags}
	add := func(tag uint64, v []byte) {
		next := binary.AppendUvarint(out, tag)
		next = binary.AppendUvarint(next, uint64(len(v)))
		next = append(next, v...)
		if len(next) <= limit {
			out = next
		}
	}
	for _, a := range m.addrs {
		add(tagAddr, a.Bytes())
	}
	for _, f := range m.fields {
		if f.Tag != tagAddr {
			add(f.Tag, f.Value)
		}
	}
	return out
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 {
		return m, nil // a node that advertises nothing
	}
	if b[0] != metaVersion && b[0] != metaVersionV1 {
		return m, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	if len(b) < 2 {
		return m, fmt.Errorf("%w: no flags", ErrBadMeta)
	}
	tagged := b[0] == metaVersion
	m.leaving = b[1]&metaLeaving != 0
	b = b[2:]
	for len(b) > 0 {
		tag := uint64(tagAddr)
		if tagged {
			t, k := binary.Uvarint(b)
			if k <= 0 {
				return nodeMeta{}, fmt.Errorf("%w: truncated tag", ErrBadMeta)
			}
			tag, b = t, b[k:]
		}
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nodeMeta{}, fmt.Errorf("%w: truncated field", ErrBadMeta)
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		if tag != tagAddr {
			m.fields = append(m.fields, MetaField{Tag: tag, Value: append([]byte(nil), v...)})
			continue
		}
		a, err := ma.NewMultiaddrBytes(v)
		if err != nil {
			return nodeMeta{}, fmt.Errorf("%w: %v", ErrBadMeta, err)
		}
		m.addrs = append(m.addrs, a)
	}
	return m, nil
}

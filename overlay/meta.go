package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
)

// Node metadata gossiped by memberlist: the peer's listen addresses, so that
// every member can dial every other one by peer ID without asking anyone,
// and whether it is leaving.
//
// Encoding: version byte (1), flags byte, then per address a uvarint length
// and the binary multiaddr. memberlist caps metadata at 512 bytes;
// encodeMeta keeps as many addresses as fit, in the order given.

const metaVersion = 1

// metaLeaving marks a peer that is leaving on purpose. memberlist v0.7.0
// does not tell its delegates a leave from a failure (the state it passes
// is never set), so a leaving peer says so in its metadata first.
const metaLeaving = 1 << 0

// nodeMeta is what a member advertises.
type nodeMeta struct {
	addrs   []ma.Multiaddr
	leaving bool
}

// ErrBadMeta is returned for node metadata that does not decode.
var ErrBadMeta = errors.New("overlay: malformed node metadata")

func encodeMeta(m nodeMeta, limit int) []byte {
	var flags byte
	if m.leaving {
		flags |= metaLeaving
	}
	out := []byte{metaVersion, flags}
	for _, a := range m.addrs {
		b := a.Bytes()
		next := binary.AppendUvarint(out, uint64(len(b)))
		next = append(next, b...)
		if len(next) > limit {
			break
		}
		out = next
	}
	return out
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 {
		return m, nil // a node that advertises nothing
	}
	if b[0] != metaVersion {
		return m, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	if len(b) < 2 {
		return m, fmt.Errorf("%w: no flags", ErrBadMeta)
	}
	m.leaving = b[1]&metaLeaving != 0
	b = b[2:]
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nodeMeta{}, fmt.Errorf("%w: truncated address", ErrBadMeta)
		}
		a, err := ma.NewMultiaddrBytes(b[k : k+int(n)])
		if err != nil {
			return nodeMeta{}, fmt.Errorf("%w: %v", ErrBadMeta, err)
		}
		m.addrs = append(m.addrs, a)
		b = b[k+int(n):]
	}
	return m, nil
}

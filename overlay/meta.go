package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"

	ma "github.com/multiformats/go-multiaddr"
)

// Node metadata gossiped by memberlist: the peer's listen addresses, so that
// every member can dial every other one by peer ID without asking anyone.
//
// Encoding: version byte (1), then per address a uvarint length and the
// binary multiaddr. memberlist caps metadata at 512 bytes; encodeMeta keeps
// as many addresses as fit, in the order given.

const metaVersion = 1

// ErrBadMeta is returned for node metadata that does not decode.
var ErrBadMeta = errors.New("overlay: malformed node metadata")

func encodeMeta(addrs []ma.Multiaddr, limit int) []byte {
	out := []byte{metaVersion}
	for _, a := range addrs {
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

func decodeMeta(b []byte) ([]ma.Multiaddr, error) {
	if len(b) == 0 {
		return nil, nil // a node that advertises nothing
	}
	if b[0] != metaVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	b = b[1:]
	var addrs []ma.Multiaddr
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: truncated address", ErrBadMeta)
		}
		a, err := ma.NewMultiaddrBytes(b[k : k+int(n)])
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadMeta, err)
		}
		addrs = append(addrs, a)
		b = b[k+int(n):]
	}
	return addrs, nil
}

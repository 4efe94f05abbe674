package p2phost

import (
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
)

// Reserve takes n bytes from the stream's resource scope before a handler
// reads into buffers of that size, so that the resource manager's memory
// limits (per stream, per peer, per protocol, for the whole host) bound
// what many streams at once can make this peer hold. The release it
// returns gives them back; it may be called more than once. A refused
// reservation is an error that names the stream's peer and protocol: the
// handler drops the stream without reading.
func Reserve(s network.Stream, n int) (release func(), err error) {
	if n <= 0 {
		return func() {}, nil
	}
	sc := s.Scope()
	if err := sc.ReserveMemory(n, network.ReservationPriorityAlways); err != nil {
		return func() {}, fmt.Errorf("reserve %d bytes for a %s stream from %s: %w",
			n, s.Protocol(), s.Conn().RemotePeer(), err)
	}
	var once sync.Once
	return func() { once.Do(func() { sc.ReleaseMemory(n) }) }, nil
}

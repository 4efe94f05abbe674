package overlay

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Class says what a stream is for, so that path choice can pick the path
// that suits it: the lowest-latency path for interactive traffic, the
// highest-throughput one for bulk.
type Class uint8

// Traffic classes.
const (
	ClassDefault    Class = iota
	ClassLatency          // interactive traffic, Chord RPCs, messages
	ClassThroughput       // bulk transfer, swarm pieces
)

func (c Class) String() string {
	switch c {
	case ClassDefault:
		return "default"
	case ClassLatency:
		return "latency"
	case ClassThroughput:
		return "throughput"
	}
	return fmt.Sprintf("Class(%d)", uint8(c))
}

// ParseClass reads a class name as String writes it.
func ParseClass(s string) (Class, error) {
	switch s {
	case "default", "":
		return ClassDefault, nil
	case "latency":
		return ClassLatency, nil
	case "throughput":
		return ClassThroughput, nil
	}
	return 0, fmt.Errorf("traffic class %q: want latency, throughput or default", s)
}

// Overlay is how every layer above reaches other peers.
type Overlay struct {
	host    host.Host
	members *Membership
}

// New binds the overlay to a host and its membership.
func New(h host.Host, members *Membership) *Overlay {
	return &Overlay{host: h, members: members}
}

// Host is the libp2p host under the overlay.
func (o *Overlay) Host() host.Host { return o.host }

// Members is the group this peer belongs to.
func (o *Overlay) Members() *Membership { return o.members }

// OpenStream opens a stream to p speaking proto, on the path that best suits
// class. Today every path is direct; path choice (RON) slots in here without
// any caller changing.
func (o *Overlay) OpenStream(ctx context.Context, p peer.ID, proto protocol.ID, class Class) (network.Stream, error) {
	if p == o.host.ID() {
		return nil, fmt.Errorf("open %s stream: %s is this peer", proto, p)
	}
	s, err := o.host.NewStream(ctx, p, proto)
	if err != nil {
		return nil, fmt.Errorf("open %s stream to %s (%s): %w", proto, p, class, err)
	}
	return s, nil
}

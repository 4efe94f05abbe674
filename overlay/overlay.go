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
	router  *Router // nil: every stream is direct
	// providers offer the paths OpenStream tries: direct, then RON's
	// one-hop paths, then any added with AddPathProvider.
	providers []PathProvider
}

// New binds the overlay to a host, its membership and its RON router (nil
// for direct paths only).
func New(h host.Host, members *Membership, router *Router) *Overlay {
	o := &Overlay{host: h, members: members, router: router}
	o.providers = []PathProvider{directPaths{o}}
	if router != nil {
		o.providers = append(o.providers, ronPaths{router})
	}
	return o
}

// Host is the libp2p host under the overlay.
func (o *Overlay) Host() host.Host { return o.host }

// Members is the group this peer belongs to.
func (o *Overlay) Members() *Membership { return o.members }

// Router is the RON router, or nil.
func (o *Overlay) Router() *Router { return o.router }

// Suspect tells path choice that traffic to p is failing (a reply that
// did not come in time): p's link is re-probed at once, so that a broken
// direct path is seen, and routed around, within a few probe timeouts.
func (o *Overlay) Suspect(p peer.ID) {
	if o.router != nil {
		o.router.Suspect(p)
	}
}

// OpenStream opens a stream to p speaking proto, on the path that best suits
// class: the direct path unless path choice has found a one-hop path
// clearly better for class, or the direct path down. When the chosen path
// fails to open, the others are tried at once: the direct path, then the
// measured one-hop paths, then, for a peer no measurement covers, a few
// members as intermediaries (SOSR). The paths come from the overlay's path
// providers (paths.go). Use ViaOf to learn the path taken.
func (o *Overlay) OpenStream(ctx context.Context, p peer.ID, proto protocol.ID, class Class) (network.Stream, error) {
	if p == o.host.ID() {
		return nil, fmt.Errorf("open %s stream: %s is this peer", proto, p)
	}
	return openOnPaths(ctx, o.providers, p, proto, class)
}

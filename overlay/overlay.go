package overlay

import (
	"context"
	"errors"
	"fmt"
	"time"

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
}

// New binds the overlay to a host, its membership and its RON router (nil
// for direct paths only).
func New(h host.Host, members *Membership, router *Router) *Overlay {
	return &Overlay{host: h, members: members, router: router}
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

// relayTries is how many intermediates a stream open tries after the
// direct path fails.
const relayTries = 3

// OpenStream opens a stream to p speaking proto, on the path that best suits
// class: the direct path unless path choice has found a one-hop path
// clearly better for class, or the direct path down. When the chosen path
// fails to open, the others are tried at once: the direct path, then the
// measured one-hop paths, then, for a peer no measurement covers, a few
// members as intermediaries (SOSR). Use ViaOf to learn the path taken.
func (o *Overlay) OpenStream(ctx context.Context, p peer.ID, proto protocol.ID, class Class) (network.Stream, error) {
	if p == o.host.ID() {
		return nil, fmt.Errorf("open %s stream: %s is this peer", proto, p)
	}
	r := o.router
	if r == nil {
		return o.direct(ctx, p, proto, class)
	}
	path := r.Route(p, class)
	var tried map[peer.ID]bool // intermediates already tried
	var errs []error
	if path.OK && path.Via != "" {
		s, err := r.OpenVia(ctx, path.Via, p, proto)
		if err == nil {
			return s, nil
		}
		tried = map[peer.ID]bool{path.Via: true}
		errs = append(errs, err)
	}
	// A member whose direct link is down, with no measured way round it:
	// the intermediaries first, the direct path last.
	directLast := !path.OK && r.member(p)
	if !directLast && ctx.Err() == nil {
		dctx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := ctx.Deadline(); ok && r.groupSize() > 1 {
			// Leave intermediaries time, should the dial hang.
			dctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(d)/2))
		}
		s, err := o.host.NewStream(dctx, p, proto)
		cancel()
		if err == nil {
			return s, nil
		}
		errs = append(errs, fmt.Errorf("direct: %w", err))
		r.Suspect(p)
	}
	// Only now, off the common path: which intermediates to try.
	for _, via := range r.Relays(p, class, relayTries) {
		if tried[via] || ctx.Err() != nil {
			continue
		}
		s, err := r.OpenVia(ctx, via, p, proto)
		if err == nil {
			return s, nil
		}
		errs = append(errs, err)
	}
	if directLast && ctx.Err() == nil {
		s, err := o.host.NewStream(ctx, p, proto)
		if err == nil {
			return s, nil
		}
		errs = append(errs, fmt.Errorf("direct: %w", err))
	}
	if len(errs) == 0 {
		errs = append(errs, ctx.Err())
	}
	return nil, fmt.Errorf("open %s stream to %s (%s): %w", proto, p, class, errors.Join(errs...))
}

func (o *Overlay) direct(ctx context.Context, p peer.ID, proto protocol.ID, class Class) (network.Stream, error) {
	s, err := o.host.NewStream(ctx, p, proto)
	if err != nil {
		return nil, fmt.Errorf("open %s stream to %s (%s): %w", proto, p, class, err)
	}
	return s, nil
}

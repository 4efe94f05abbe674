package overlay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// The path seam. OpenStream does not know how a stream reaches its peer: it
// asks a small, ordered set of path providers. Each offers the paths it
// has towards a peer, with a rank; OpenStream tries them in rank order
// (providers' order breaks ties) until one opens. Providers today, in
// order: the direct path (this host's own connection, dialed if need be)
// and RON's one-hop paths. The NAT layer adds a relay circuit and a
// hole-punched connection the same way, with AddPathProvider, and no
// caller of OpenStream changes.

// Rank orders the paths offered for one stream. Ranks are tried lowest
// first: RankPreferred before RankNormal; then every provider's
// Fallbacks, asked only once those have failed; then RankLast.
type Rank uint8

// Path ranks.
const (
	RankPreferred Rank = iota // measured better than the direct path
	RankNormal                // the usual way
	RankLast                  // worth a try once everything else has failed
)

// Path is one way to open a stream to a peer.
type Path struct {
	Kind string  // what provides it: "direct", "ron", later "relay", "punched"
	Via  peer.ID // the peer it goes through, or ""
	Rank Rank
	// Hedge says the open may hang for long (a dial): when other paths
	// are left to try, it gets half the time that remains, not all.
	Hedge bool
	// Open opens the stream.
	Open func(ctx context.Context, proto protocol.ID) (network.Stream, error)
	// Failed, if set, is told when Open failed (for example, to re-probe
	// the link at once).
	Failed func(error)
}

func (p Path) key() string { return p.Kind + "/" + string(p.Via) }

func (p Path) String() string {
	if p.Via == "" {
		return p.Kind
	}
	return p.Kind + " via " + p.Via.String()
}

// PathProvider offers ways to reach peers. Both methods are queries: cheap,
// without I/O, and they change nothing (displaying or planning routes
// never moves them).
type PathProvider interface {
	// Name names the provider in errors and logs.
	Name() string
	// Paths are the provider's paths to p for class, to try first.
	Paths(p peer.ID, class Class) []Path
	// Fallbacks are paths to try only once every first path has failed;
	// tried holds the intermediates already tried, by peer.
	Fallbacks(p peer.ID, class Class, tried map[peer.ID]bool) []Path
}

// AddPathProvider adds a provider after those already there. It is meant
// for start-up, before streams are opened.
func (o *Overlay) AddPathProvider(pp PathProvider) {
	o.providers = append(o.providers, pp)
}

// openOnPaths tries the providers' paths to p in rank order and returns
// the first stream that opens, or every failure joined.
func openOnPaths(ctx context.Context, providers []PathProvider, p peer.ID, proto protocol.ID, class Class) (network.Stream, error) {
	var first []Path
	for _, pp := range providers {
		first = append(first, pp.Paths(p, class)...)
	}
	slices.SortStableFunc(first, func(a, b Path) int { return int(a.Rank) - int(b.Rank) })
	var (
		errs  []error
		seen  = map[string]bool{}
		tried = map[peer.ID]bool{}
	)
	try := func(path Path, more bool) network.Stream {
		if seen[path.key()] || ctx.Err() != nil {
			return nil
		}
		seen[path.key()] = true
		if path.Via != "" {
			tried[path.Via] = true
		}
		octx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := ctx.Deadline(); ok && path.Hedge && more {
			// Leave the other paths time, should this one hang.
			octx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(d)/2))
		}
		s, err := path.Open(octx, proto)
		cancel()
		if err == nil {
			return s
		}
		if path.Via == "" {
			err = fmt.Errorf("%s: %w", path.Kind, err)
		}
		errs = append(errs, err)
		if path.Failed != nil {
			path.Failed(err)
		}
		return nil
	}
	var last []Path
	for i, path := range first {
		if path.Rank == RankLast {
			last = append(last, first[i:]...)
			break
		}
		// Anything may follow: fallbacks are asked for later.
		if s := try(path, true); s != nil {
			return s, nil
		}
	}
	for _, pp := range providers {
		if ctx.Err() != nil {
			break
		}
		for _, path := range pp.Fallbacks(p, class, tried) {
			if s := try(path, true); s != nil {
				return s, nil
			}
		}
	}
	for i, path := range last {
		if s := try(path, i < len(last)-1); s != nil {
			return s, nil
		}
	}
	if len(errs) == 0 {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
		} else {
			errs = append(errs, errors.New("no path"))
		}
	}
	return nil, fmt.Errorf("open %s stream to %s (%s): %w", proto, p, class, errors.Join(errs...))
}

// directPaths is the direct path: this host's connection to the peer, or a
// new dial. When the router judges the direct link down and has no
// measured way round it, the direct path goes last.
type directPaths struct{ o *Overlay }

func (d directPaths) Name() string { return "direct" }

func (d directPaths) Paths(p peer.ID, class Class) []Path {
	o := d.o
	path := Path{Kind: "direct", Rank: RankNormal, Open: func(ctx context.Context, proto protocol.ID) (network.Stream, error) {
		return o.host.NewStream(ctx, p, proto)
	}}
	if r := o.router; r != nil {
		path.Hedge = r.groupSize() > 1
		path.Failed = func(error) { r.Suspect(p) }
		if r.directDown(p, class) {
			path.Rank = RankLast
		}
	}
	return []Path{path}
}

func (directPaths) Fallbacks(peer.ID, Class, map[peer.ID]bool) []Path { return nil }

// ronPaths is RON's one-hop paths: the measured path, when path choice
// found it clearly better than the direct one (or the direct one down);
// and, once all else failed, a few intermediates to try (measured one-hop
// paths first, then, for a peer no measurement covers, members whose
// links are up: SOSR).
type ronPaths struct{ r *Router }

// relayTries is how many intermediates a stream open tries after the
// direct path fails.
const relayTries = 3

func (rp ronPaths) Name() string { return "ron" }

func (rp ronPaths) Paths(p peer.ID, class Class) []Path {
	if route := rp.r.Route(p, class); route.OK && route.Via != "" {
		return []Path{rp.via(route.Via, p, RankPreferred)}
	}
	return nil
}

func (rp ronPaths) Fallbacks(p peer.ID, class Class, tried map[peer.ID]bool) []Path {
	var out []Path
	for _, via := range rp.r.Relays(p, class, relayTries) {
		if !tried[via] {
			out = append(out, rp.via(via, p, RankNormal))
		}
	}
	return out
}

func (rp ronPaths) via(via, p peer.ID, rank Rank) Path {
	r := rp.r
	return Path{Kind: "ron", Via: via, Rank: rank, Open: func(ctx context.Context, proto protocol.ID) (network.Stream, error) {
		return r.OpenVia(ctx, via, p, proto)
	}}
}

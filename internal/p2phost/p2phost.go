// Package p2phost holds the libp2p options every host of this project
// takes, the daemon's and the benches' and tests' alike, and the one way to
// close a host within a deadline.
package p2phost

import (
	"errors"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/peer-overlay/peer/internal/stop"
)

// Options are the libp2p options that every host here starts with.
//
// Two libp2p defaults are off because together they can hang Close forever
// (seen in 2 of 19 64-peer benches under CPU contention). In go-libp2p
// v0.51, Close first stops the fx app, which closes the observed-address
// manager: its event loop returns without closing its subscription to
// EvtPeerIdentificationCompleted. Identify goes on emitting that event for
// connections still being identified; once the dead subscription's buffer
// (16) is full, Emit blocks while it holds that event type's lock. Close
// then reaches the ambient AutoNAT v1, whose own unsubscribe from the same
// event waits for that lock.
//
//   - DisableIdentifyAddressDiscovery removes the observed-address manager
//     and so the subscription nobody drains. This project learns its public
//     mapping by STUN from the QUIC socket, not from identify's observers.
//   - ForceReachabilityPublic replaces the ambient AutoNAT v1 probe loop,
//     which nothing reads, with a static answer that subscribes to nothing.
//     Reachability is the NAT layer's to decide.
//
// Metrics are off too: nothing scrapes libp2p's, and they cost CPU.
func Options() []libp2p.Option {
	return []libp2p.Option{
		libp2p.DisableMetrics(),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.ForceReachabilityPublic(),
	}
}

// Close closes h, waiting at most d; past that it returns an error that
// wraps stop.ErrSkipped and leaves the Close running.
func Close(h host.Host, d time.Duration) error {
	return stop.Within(d, "libp2p host "+h.ID().ShortString(), h.Close)
}

// CloseAll closes every host at once and waits at most d for all of them.
// The error names the hosts whose Close was still running at the deadline.
func CloseAll(hosts []host.Host, d time.Duration) error {
	errs := make(chan error, len(hosts))
	for _, h := range hosts {
		go func() { errs <- Close(h, d) }()
	}
	var all []error
	for range hosts {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

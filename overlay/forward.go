package overlay

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/overlay/onehop/client"
)

// One-hop forwarding lives in overlay/onehop: wire (the format), client
// (both ends of a forwarded stream) and server (the intermediate). The
// router owns one of each and tells them who may use them: forwarding is a
// service to the group, not an open relay.

// OpenVia opens a stream to dst speaking proto through the intermediate
// via, secured end to end: via forwards ciphertext and can neither read it
// nor pose as either end. The returned stream's Conn().RemotePeer() is dst.
func (r *Router) OpenVia(ctx context.Context, via, dst peer.ID, proto protocol.ID) (network.Stream, error) {
	return r.fwd.Open(ctx, via, dst, proto)
}

// ViaOf reports the intermediate a stream goes through, or "" for a direct
// stream.
func ViaOf(s network.Stream) peer.ID { return client.ViaOf(s) }

// allowForward is the intermediate's rule: the source is a member of this
// peer's group, and the destination a known member (beyond the group, as
// SOSR paths go, is fine; beyond the membership is not).
func (r *Router) allowForward(src, dst peer.ID) string {
	switch {
	case !r.member(src):
		return fmt.Sprintf("%s is not a member of this peer's group", src)
	case !r.known(dst):
		return fmt.Sprintf("%s is not a known member", dst)
	}
	return ""
}

// acceptForwarded is the destination's rule: the intermediate and the
// source are known members.
func (r *Router) acceptForwarded(src, via peer.ID) string {
	switch {
	case !r.known(via):
		return fmt.Sprintf("intermediate %s is not a known member", via)
	case !r.known(src):
		return fmt.Sprintf("%s is not a known member", src)
	}
	return ""
}

// ForwardStats counts streams through intermediates: opened by this peer,
// spliced by it as an intermediate, and accepted by it as a destination.
type ForwardStats struct {
	Opened   int64 `json:"opened"`
	Spliced  int64 `json:"spliced"`
	Accepted int64 `json:"accepted"`
	// SplicedBytes is what this peer carried as an intermediate, both
	// directions.
	SplicedBytes int64 `json:"spliced_bytes"`
}

// Forwarded reports the forwarding counters.
func (r *Router) Forwarded() ForwardStats {
	return ForwardStats{Opened: r.fwd.Opened(), Spliced: r.relay.Spliced(), Accepted: r.fwd.Accepted(),
		SplicedBytes: r.relay.Bytes()}
}

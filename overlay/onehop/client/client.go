// Package client is both ends of a one-hop forwarded stream: the source,
// which asks an intermediate to forward it to a destination, and the
// destination, which accepts what an intermediate forwards. The two ends
// run a Noise handshake over the spliced bytes, so the intermediate (the
// server package, which this one never imports) carries only ciphertext
// and can pose as neither. A forwarded stream looks like any other
// network.Stream to the protocol that uses it; ViaOf tells it apart.
package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	msmux "github.com/multiformats/go-multistream"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/overlay/onehop/wire"
)

// SetupTimeout bounds the setup of a forwarded stream at the destination:
// the header, the handshake and the protocol selection.
const SetupTimeout = 10 * time.Second

// Accept decides whether this peer, as a destination, takes a stream from
// src forwarded by via: "" to take it, else the reason it is refused.
type Accept func(src, via peer.ID) string

// Client opens forwarded streams and accepts them.
type Client struct {
	h      host.Host
	noise  *noise.Transport // nil: forwarding is off (no private key)
	accept Accept
	log    *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	opened   atomic.Int64
	accepted atomic.Int64
}

// New makes a client for h and starts accepting forwarded streams that
// accept lets through. Without h's private key, forwarding is off, said
// once in the log, and Open fails.
func New(h host.Host, accept Accept, log *slog.Logger) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{h: h, accept: accept, log: log, ctx: ctx, cancel: cancel}
	if key := h.Peerstore().PrivKey(h.ID()); key != nil {
		var err error
		if c.noise, err = noise.New(noise.ID, key, nil); err != nil {
			log.Warn("forwarding is off", "err", err)
		}
	} else {
		log.Warn("forwarding is off: no private key")
	}
	h.SetStreamHandler(wire.FwdInProtocol, c.handleIn)
	return c
}

// Close stops accepting forwarded streams; those open go on.
func (c *Client) Close() {
	c.h.RemoveStreamHandler(wire.FwdInProtocol)
	c.cancel()
}

// Opened is how many streams this peer opened through an intermediate.
func (c *Client) Opened() int64 { return c.opened.Load() }

// Accepted is how many forwarded streams this peer accepted.
func (c *Client) Accepted() int64 { return c.accepted.Load() }

// ViaOf reports the intermediate a stream goes through, or "" for a direct
// stream.
func ViaOf(s network.Stream) peer.ID { return wire.ViaOf(s) }

// Open opens a stream to dst speaking proto through the intermediate via,
// secured end to end: via forwards ciphertext and can neither read it nor
// pose as either end. The returned stream's Conn().RemotePeer() is dst.
func (c *Client) Open(ctx context.Context, via, dst peer.ID, proto protocol.ID) (network.Stream, error) {
	self := c.h.ID()
	if via == dst || via == self || dst == self {
		return nil, fmt.Errorf("forward to %s via %s: the intermediate must be a third peer", dst, via)
	}
	if c.noise == nil {
		return nil, errors.New("forwarding is off: no private key to secure forwarded streams")
	}
	st, err := c.h.NewStream(ctx, via, wire.FwdProtocol)
	if err != nil {
		return nil, fmt.Errorf("open a stream to intermediate %s: %w", via, err)
	}
	fail := func(err error) (network.Stream, error) {
		st.Reset()
		var ref *wire.RefusedError
		if errors.As(err, &ref) {
			err = ref // the refusal says it all; drop the handshake's wording
		}
		return nil, fmt.Errorf("%s stream to %s via %s: %w", proto, dst, via, err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	if _, err := st.Write(wire.AppendFwdHeader(nil, dst)); err != nil {
		return fail(err)
	}
	// The handshake's first message goes out at once, behind the header;
	// the first thing read is the status, from via if it refused, else
	// from dst.
	sc, err := c.noise.SecureOutbound(ctx, &statusConn{Conn: p2phost.StreamConn{Stream: st}}, dst)
	if err != nil {
		return fail(err)
	}
	_ = st.SetDeadline(time.Time{})
	rs := newStream(self, sc, st, via, network.DirOutbound)
	rs.rw = msmux.NewMSSelect(io.ReadWriteCloser(sc), proto)
	rs.proto.Store(&proto)
	c.opened.Add(1)
	return rs, nil
}

// statusConn reads the forwarding status before anything else, and turns a
// refusal into the error every read returns.
type statusConn struct {
	net.Conn
	done bool
	err  error
}

func (c *statusConn) Read(b []byte) (int, error) {
	if !c.done {
		c.done = true
		c.err = wire.ReadStatus(c.Conn)
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// handleIn accepts a stream that an intermediate forwards from a member:
// it checks both, completes the security handshake as the responder (which
// proves the source is who the header says), negotiates the protocol and
// hands the stream to that protocol's handler like any other.
func (c *Client) handleIn(st network.Stream) {
	via := st.Conn().RemotePeer()
	if wire.ViaOf(st) != "" {
		wire.Refuse(st, "a forwarded stream is not forwarded again")
		c.log.Info("refused a twice-forwarded stream", "via", via)
		return
	}
	_ = st.SetDeadline(time.Now().Add(SetupTimeout))
	src, err := wire.ReadFwdHeader(st)
	if err != nil {
		c.log.Info("bad forwarded-stream header", "via", via, "err", err)
		st.Reset()
		return
	}
	var reason string
	switch {
	case c.noise == nil:
		reason = "forwarding is off at the destination"
	case src == c.h.ID() || src == via:
		reason = "forwarding loop"
	default:
		reason = c.accept(src, via)
	}
	if reason != "" {
		c.log.Info("refused a forwarded stream", "from", src, "via", via, "why", reason)
		wire.Refuse(st, reason)
		return
	}
	if _, err := st.Write(wire.AppendStatus(nil, "")); err != nil {
		st.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, SetupTimeout)
	sc, err := c.noise.SecureInbound(ctx, p2phost.StreamConn{Stream: st}, src)
	cancel()
	if err != nil {
		c.log.Info("forwarded stream failed its handshake", "from", src, "via", via, "err", err)
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Now().Add(SetupTimeout))
	proto, handler, err := c.h.Mux().Negotiate(sc)
	if err != nil {
		c.log.Debug("forwarded stream: protocol negotiation", "from", src, "err", err)
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	rs := newStream(c.h.ID(), sc, st, via, network.DirInbound)
	rs.proto.Store(&proto)
	c.accepted.Add(1)
	_ = handler(proto, rs)
}

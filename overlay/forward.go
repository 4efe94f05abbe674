package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"

	"github.com/peer-overlay/peer/overlay/ron"
)

// Forwarding limits at an intermediate, and how long the setup of a
// forwarded stream may take at either end.
const (
	defaultMaxForward        = 256 // spliced streams at once
	defaultMaxForwardPerPeer = 64  // of them for one source
	fwdSetupTimeout          = 10 * time.Second
	spliceBuf                = 32 << 10
)

// OpenVia opens a stream to dst speaking proto through the intermediate
// via, secured end to end: via forwards ciphertext and can neither read it
// nor pose as either end. The returned stream's Conn().RemotePeer() is dst.
func (r *Router) OpenVia(ctx context.Context, via, dst peer.ID, proto protocol.ID) (network.Stream, error) {
	self := r.h.ID()
	if via == dst || via == self || dst == self {
		return nil, fmt.Errorf("forward to %s via %s: the intermediate must be a third peer", dst, via)
	}
	if r.noise == nil {
		return nil, errors.New("forwarding is off: no private key to secure forwarded streams")
	}
	st, err := r.h.NewStream(ctx, via, ron.FwdProtocol)
	if err != nil {
		return nil, fmt.Errorf("open a stream to intermediate %s: %w", via, err)
	}
	fail := func(err error) (network.Stream, error) {
		st.Reset()
		var ref *ron.RefusedError
		if errors.As(err, &ref) {
			err = ref // the refusal says it all; drop the handshake's wording
		}
		return nil, fmt.Errorf("%s stream to %s via %s: %w", proto, dst, via, err)
	}
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	if _, err := st.Write(ron.AppendFwdHeader(nil, dst)); err != nil {
		return fail(err)
	}
	// The handshake's first message goes out at once, behind the header;
	// the first thing read is the status, from via if it refused, else
	// from dst.
	sc, err := r.noise.SecureOutbound(ctx, &statusConn{Conn: streamConn{st}}, dst)
	if err != nil {
		return fail(err)
	}
	_ = st.SetDeadline(time.Time{})
	rs := newRelayedStream(r.h.ID(), sc, st, via, network.DirOutbound)
	rs.rw = msmux.NewMSSelect(io.ReadWriteCloser(sc), proto)
	rs.proto.Store(&proto)
	r.fwdOpened.Add(1)
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
		c.err = ron.ReadStatus(c.Conn)
	}
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// ViaOf reports the intermediate a stream goes through, or "" for a direct
// stream.
func ViaOf(s network.Stream) peer.ID {
	if rs, ok := s.(*relayedStream); ok {
		return rs.conn.via
	}
	return ""
}

func refuse(st network.Stream, reason string) {
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = st.Write(ron.AppendStatus(nil, reason))
	_ = st.Close()
}

// handleFwd serves a member's request to forward a stream to another.
func (r *Router) handleFwd(st network.Stream) {
	src := st.Conn().RemotePeer()
	if ViaOf(st) != "" {
		refuse(st, "a forwarded stream is not forwarded again")
		r.log.Info("refused to forward a forwarded stream", "from", src)
		return
	}
	_ = st.SetDeadline(time.Now().Add(fwdSetupTimeout))
	dst, err := ron.ReadFwdHeader(st)
	if err != nil {
		r.log.Info("bad forwarding request", "from", src, "err", err)
		st.Reset()
		return
	}
	var reason string
	switch {
	case dst == r.h.ID():
		reason = "the intermediate is the destination"
	case dst == src:
		reason = "the destination is the source"
	case !r.member(src):
		// Forwarding is a service to the group, not an open relay.
		reason = fmt.Sprintf("%s is not a member of this peer's group", src)
	case !r.known(dst):
		// Beyond the group (SOSR) is fine, beyond the membership is not.
		reason = fmt.Sprintf("%s is not a known member", dst)
	}
	if reason == "" && !r.acquireFwd(src) {
		reason = "forwarding limit reached"
	}
	if reason != "" {
		r.log.Info("refused to forward", "from", src, "to", dst, "why", reason)
		refuse(st, reason)
		return
	}
	defer r.releaseFwd(src)
	ctx, cancel := context.WithTimeout(r.ctx, fwdSetupTimeout)
	out, err := r.h.NewStream(ctx, dst, ron.FwdInProtocol)
	cancel()
	if err != nil {
		refuse(st, fmt.Sprintf("the intermediate cannot reach %s: %v", dst, err))
		return
	}
	_ = out.SetWriteDeadline(time.Now().Add(fwdSetupTimeout))
	if _, err := out.Write(ron.AppendFwdHeader(nil, src)); err != nil {
		out.Reset()
		refuse(st, fmt.Sprintf("the intermediate cannot reach %s: %v", dst, err))
		return
	}
	_ = out.SetWriteDeadline(time.Time{})
	_ = st.SetDeadline(time.Time{})
	r.fwdSpliced.Add(1)
	splice(st, out)
}

func (r *Router) acquireFwd(src peer.ID) bool {
	r.fwdMu.Lock()
	defer r.fwdMu.Unlock()
	if r.fwdTotal >= r.cfg.MaxForward || r.fwdBy[src] >= r.cfg.MaxForwardPerPeer {
		return false
	}
	r.fwdTotal++
	r.fwdBy[src]++
	return true
}

func (r *Router) releaseFwd(src peer.ID) {
	r.fwdMu.Lock()
	defer r.fwdMu.Unlock()
	r.fwdTotal--
	if r.fwdBy[src]--; r.fwdBy[src] <= 0 {
		delete(r.fwdBy, src)
	}
}

// splice copies each stream into the other until both directions end. A
// direction that ends cleanly half-closes the other side; one that fails
// resets both.
func splice(a, b network.Stream) {
	var wg sync.WaitGroup
	half := func(dst, src network.Stream) {
		defer wg.Done()
		buf := make([]byte, spliceBuf)
		if _, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf); err != nil {
			a.Reset()
			b.Reset()
			return
		}
		_ = dst.CloseWrite()
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// readerOnly and writerOnly keep io.CopyBuffer on the plain Read/Write path.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// handleFwdIn accepts a stream that an intermediate forwards from a member:
// it checks both, completes the security handshake as the responder (which
// proves the source is who the header says), negotiates the protocol and
// hands the stream to that protocol's handler like any other.
func (r *Router) handleFwdIn(st network.Stream) {
	via := st.Conn().RemotePeer()
	if ViaOf(st) != "" {
		refuse(st, "a forwarded stream is not forwarded again")
		r.log.Info("refused a twice-forwarded stream", "via", via)
		return
	}
	_ = st.SetDeadline(time.Now().Add(fwdSetupTimeout))
	src, err := ron.ReadFwdHeader(st)
	if err != nil {
		r.log.Info("bad forwarded-stream header", "via", via, "err", err)
		st.Reset()
		return
	}
	var reason string
	switch {
	case r.noise == nil:
		reason = "forwarding is off at the destination"
	case src == r.h.ID() || src == via:
		reason = "forwarding loop"
	case !r.known(via):
		reason = fmt.Sprintf("intermediate %s is not a known member", via)
	case !r.known(src):
		reason = fmt.Sprintf("%s is not a known member", src)
	}
	if reason != "" {
		r.log.Info("refused a forwarded stream", "from", src, "via", via, "why", reason)
		refuse(st, reason)
		return
	}
	if _, err := st.Write(ron.AppendStatus(nil, "")); err != nil {
		st.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(r.ctx, fwdSetupTimeout)
	sc, err := r.noise.SecureInbound(ctx, streamConn{st}, src)
	cancel()
	if err != nil {
		r.log.Info("forwarded stream failed its handshake", "from", src, "via", via, "err", err)
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Now().Add(fwdSetupTimeout))
	proto, handler, err := r.h.Mux().Negotiate(sc)
	if err != nil {
		r.log.Debug("forwarded stream: protocol negotiation", "from", src, "err", err)
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	rs := newRelayedStream(r.h.ID(), sc, st, via, network.DirInbound)
	rs.proto.Store(&proto)
	r.fwdAccepted.Add(1)
	_ = handler(proto, rs)
}

// relayedStream is a stream that travels through an intermediate, secured
// end to end. It looks like any other stream to the protocol that uses it;
// ViaOf tells it apart.
type relayedStream struct {
	sec   sec.SecureConn     // the end-to-end secured channel
	rw    io.ReadWriteCloser // sec, or the protocol selection over it
	under network.Stream     // the stream to or from the intermediate
	conn  *relayedConn
	proto atomic.Pointer[protocol.ID]
	id    string
}

var relayedIDs atomic.Uint64

func newRelayedStream(local peer.ID, sc sec.SecureConn, under network.Stream, via peer.ID, dir network.Direction) *relayedStream {
	rs := &relayedStream{sec: sc, rw: sc, under: under, id: "ron-" + strconv.FormatUint(relayedIDs.Add(1), 10)}
	rs.conn = &relayedConn{local: local, remote: sc.RemotePeer(), key: sc.RemotePublicKey(), via: via,
		stream: rs, stat: network.Stats{Direction: dir, Opened: time.Now()}}
	empty := protocol.ID("")
	rs.proto.Store(&empty)
	return rs
}

var _ network.Stream = (*relayedStream)(nil)

func (s *relayedStream) Read(b []byte) (int, error)  { return s.rw.Read(b) }
func (s *relayedStream) Write(b []byte) (int, error) { return s.rw.Write(b) }

// Close flushes what is written and closes both directions.
func (s *relayedStream) Close() error {
	s.conn.closed.Store(true)
	return s.rw.Close()
}

// CloseWrite ends this side's writing; the far end reads EOF.
func (s *relayedStream) CloseWrite() error {
	if f, ok := s.rw.(interface{ Flush() error }); ok {
		_ = f.Flush() // a stream closed before any write still selects its protocol
	}
	return s.under.CloseWrite()
}

func (s *relayedStream) CloseRead() error { return s.under.CloseRead() }

func (s *relayedStream) Reset() error {
	s.conn.closed.Store(true)
	return s.under.Reset()
}

func (s *relayedStream) ResetWithError(c network.StreamErrorCode) error {
	s.conn.closed.Store(true)
	return s.under.ResetWithError(c)
}

func (s *relayedStream) SetDeadline(t time.Time) error      { return s.sec.SetDeadline(t) }
func (s *relayedStream) SetReadDeadline(t time.Time) error  { return s.sec.SetReadDeadline(t) }
func (s *relayedStream) SetWriteDeadline(t time.Time) error { return s.sec.SetWriteDeadline(t) }
func (s *relayedStream) ID() string                         { return s.id }
func (s *relayedStream) Protocol() protocol.ID              { return *s.proto.Load() }
func (s *relayedStream) SetProtocol(id protocol.ID) error   { s.proto.Store(&id); return nil }
func (s *relayedStream) Stat() network.Stats                { return s.conn.stat }
func (s *relayedStream) Conn() network.Conn                 { return s.conn }
func (s *relayedStream) Scope() network.StreamScope         { return &network.NullScope{} }

// relayedConn is the one-stream connection a relayed stream reports as its
// own: its remote peer is the far end (as the handshake proved), not the
// intermediate.
type relayedConn struct {
	local, remote peer.ID
	key           ic.PubKey
	via           peer.ID
	stream        *relayedStream
	stat          network.Stats
	closed        atomic.Bool
}

var _ network.Conn = (*relayedConn)(nil)

func (c *relayedConn) Close() error                               { return c.stream.Reset() }
func (c *relayedConn) CloseWithError(network.ConnErrorCode) error { return c.stream.Reset() }
func (c *relayedConn) LocalPeer() peer.ID                         { return c.local }
func (c *relayedConn) RemotePeer() peer.ID                        { return c.remote }
func (c *relayedConn) RemotePublicKey() ic.PubKey                 { return c.key }
func (c *relayedConn) Stat() network.ConnStats {
	return network.ConnStats{Stats: c.stat, NumStreams: 1}
}
func (c *relayedConn) Scope() network.ConnScope     { return &network.NullScope{} }
func (c *relayedConn) ID() string                   { return c.stream.id }
func (c *relayedConn) GetStreams() []network.Stream { return []network.Stream{c.stream} }
func (c *relayedConn) IsClosed() bool               { return c.closed.Load() }
func (c *relayedConn) As(any) bool                  { return false }
func (c *relayedConn) LocalMultiaddr() ma.Multiaddr { return c.stream.under.Conn().LocalMultiaddr() }
func (c *relayedConn) NewStream(context.Context) (network.Stream, error) {
	return nil, errors.New("a forwarded connection carries one stream; open another through the overlay")
}

func (c *relayedConn) ConnState() network.ConnectionState {
	return network.ConnectionState{Security: noise.ID, Transport: "ron-forward"}
}

// RemoteMultiaddr names the far end behind the intermediate, as a circuit
// address does.
func (c *relayedConn) RemoteMultiaddr() ma.Multiaddr {
	base := c.stream.under.Conn().RemoteMultiaddr()
	tail, err := ma.NewMultiaddr("/p2p/" + c.via.String() + "/p2p-circuit/p2p/" + c.remote.String())
	if err != nil {
		return base
	}
	return base.Encapsulate(tail)
}

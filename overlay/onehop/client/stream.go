package client

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	ic "github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	ma "github.com/multiformats/go-multiaddr"
)

// stream is a stream that travels through an intermediate, secured
// end to end. It looks like any other stream to the protocol that uses it;
// ViaOf tells it apart.
type stream struct {
	sec   sec.SecureConn     // the end-to-end secured channel
	rw    io.ReadWriteCloser // sec, or the protocol selection over it
	under network.Stream     // the stream to or from the intermediate
	conn  *conn
	proto atomic.Pointer[protocol.ID]
	id    string
}

var streamIDs atomic.Uint64

func newStream(local peer.ID, sc sec.SecureConn, under network.Stream, via peer.ID, dir network.Direction) *stream {
	rs := &stream{sec: sc, rw: sc, under: under, id: "ron-" + strconv.FormatUint(streamIDs.Add(1), 10)}
	rs.conn = &conn{local: local, remote: sc.RemotePeer(), key: sc.RemotePublicKey(), via: via,
		stream: rs, stat: network.Stats{Direction: dir, Opened: time.Now()}}
	empty := protocol.ID("")
	rs.proto.Store(&empty)
	return rs
}

var _ network.Stream = (*stream)(nil)

func (s *stream) Read(b []byte) (int, error)  { return s.rw.Read(b) }
func (s *stream) Write(b []byte) (int, error) { return s.rw.Write(b) }

// Close flushes what is written and closes both directions.
func (s *stream) Close() error {
	s.conn.closed.Store(true)
	return s.rw.Close()
}

// CloseWrite ends this side's writing; the far end reads EOF.
func (s *stream) CloseWrite() error {
	if f, ok := s.rw.(interface{ Flush() error }); ok {
		_ = f.Flush() // a stream closed before any write still selects its protocol
	}
	return s.under.CloseWrite()
}

func (s *stream) CloseRead() error { return s.under.CloseRead() }

func (s *stream) Reset() error {
	s.conn.closed.Store(true)
	return s.under.Reset()
}

func (s *stream) ResetWithError(c network.StreamErrorCode) error {
	s.conn.closed.Store(true)
	return s.under.ResetWithError(c)
}

func (s *stream) SetDeadline(t time.Time) error      { return s.sec.SetDeadline(t) }
func (s *stream) SetReadDeadline(t time.Time) error  { return s.sec.SetReadDeadline(t) }
func (s *stream) SetWriteDeadline(t time.Time) error { return s.sec.SetWriteDeadline(t) }
func (s *stream) ID() string                         { return s.id }
func (s *stream) Protocol() protocol.ID              { return *s.proto.Load() }
func (s *stream) SetProtocol(id protocol.ID) error   { s.proto.Store(&id); return nil }
func (s *stream) Stat() network.Stats                { return s.conn.stat }
func (s *stream) Conn() network.Conn                 { return s.conn }
func (s *stream) Via() peer.ID                       { return s.conn.via }

// Scope is the scope of the stream to or from the intermediate, which
// carries every byte of this one: memory reserved on it is charged to the
// intermediate's peer scope and to this host's, as the bytes are.
func (s *stream) Scope() network.StreamScope { return s.under.Scope() }

// conn is the one-stream connection a relayed stream reports as its
// own: its remote peer is the far end (as the handshake proved), not the
// intermediate.
type conn struct {
	local, remote peer.ID
	key           ic.PubKey
	via           peer.ID
	stream        *stream
	stat          network.Stats
	closed        atomic.Bool
}

var _ network.Conn = (*conn)(nil)

func (c *conn) Close() error                               { return c.stream.Reset() }
func (c *conn) CloseWithError(network.ConnErrorCode) error { return c.stream.Reset() }
func (c *conn) LocalPeer() peer.ID                         { return c.local }
func (c *conn) RemotePeer() peer.ID                        { return c.remote }
func (c *conn) RemotePublicKey() ic.PubKey                 { return c.key }
func (c *conn) Stat() network.ConnStats {
	return network.ConnStats{Stats: c.stat, NumStreams: 1}
}
func (c *conn) Scope() network.ConnScope     { return c.stream.under.Conn().Scope() }
func (c *conn) ID() string                   { return c.stream.id }
func (c *conn) GetStreams() []network.Stream { return []network.Stream{c.stream} }
func (c *conn) IsClosed() bool               { return c.closed.Load() }
func (c *conn) As(any) bool                  { return false }
func (c *conn) LocalMultiaddr() ma.Multiaddr { return c.stream.under.Conn().LocalMultiaddr() }
func (c *conn) NewStream(context.Context) (network.Stream, error) {
	return nil, errors.New("a forwarded connection carries one stream; open another through the overlay")
}

func (c *conn) ConnState() network.ConnectionState {
	return network.ConnectionState{Security: noise.ID, Transport: "ron-forward"}
}

// RemoteMultiaddr names the far end behind the intermediate, as a circuit
// address does.
func (c *conn) RemoteMultiaddr() ma.Multiaddr {
	base := c.stream.under.Conn().RemoteMultiaddr()
	tail, err := ma.NewMultiaddr("/p2p/" + c.via.String() + "/p2p-circuit/p2p/" + c.remote.String())
	if err != nil {
		return base
	}
	return base.Encapsulate(tail)
}

package p2phost

import (
	"net"

	"github.com/libp2p/go-libp2p/core/network"
	manet "github.com/multiformats/go-multiaddr/net"
)

// StreamConn presents a libp2p stream as a net.Conn, for code that wants
// one: memberlist's reliable transport, and security handshakes run over a
// forwarded stream.
type StreamConn struct {
	network.Stream
}

var _ net.Conn = StreamConn{}

func (c StreamConn) LocalAddr() net.Addr {
	if a, err := manet.ToNetAddr(c.Conn().LocalMultiaddr()); err == nil {
		return a
	}
	return peerAddr(c.Conn().LocalPeer().String())
}

func (c StreamConn) RemoteAddr() net.Addr {
	if a, err := manet.ToNetAddr(c.Conn().RemoteMultiaddr()); err == nil {
		return a
	}
	return peerAddr(c.Conn().RemotePeer().String())
}

// peerAddr names a peer where no IP address describes the connection (for
// example a relayed one).
type peerAddr string

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return string(a) }

package overlay

import (
	"net"

	"github.com/libp2p/go-libp2p/core/network"
	manet "github.com/multiformats/go-multiaddr/net"
)

// streamConn presents a libp2p stream as a net.Conn, which is what
// memberlist expects of its reliable transport.
type streamConn struct {
	network.Stream
}

var _ net.Conn = streamConn{}

func (c streamConn) LocalAddr() net.Addr {
	if a, err := manet.ToNetAddr(c.Conn().LocalMultiaddr()); err == nil {
		return a
	}
	return peerAddr(c.Conn().LocalPeer().String())
}

func (c streamConn) RemoteAddr() net.Addr {
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

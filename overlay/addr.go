package overlay

import (
	"net"
	"strconv"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// IPPort reads the IP, transport ("tcp" or "udp") and port of a multiaddr
// such as /ip4/198.18.0.1/tcp/4001 or /ip6/::1/udp/4001/quic-v1. It reads
// the components itself: manet cannot convert /udp/.../quic-v1.
func IPPort(a ma.Multiaddr) (ip net.IP, network string, port int, ok bool) {
	for _, c := range a {
		switch code := c.Protocol().Code; code {
		case ma.P_IP4, ma.P_IP6:
			ip = net.IP(c.RawValue())
		case ma.P_TCP, ma.P_UDP:
			if network != "" {
				continue // the first transport port is the one that counts
			}
			p, err := strconv.Atoi(c.Value())
			if err != nil {
				return nil, "", 0, false
			}
			network, port = "tcp", p
			if code == ma.P_UDP {
				network = "udp"
			}
		}
	}
	return ip, network, port, ip != nil && network != ""
}

// AddrInfoString names a peer as a user would dial it: its first address
// followed by /p2p/<id>, or the bare ID when it has no address.
func AddrInfoString(ai peer.AddrInfo) string {
	if len(ai.Addrs) > 0 {
		return ai.Addrs[0].String() + "/p2p/" + ai.ID.String()
	}
	return ai.ID.String()
}

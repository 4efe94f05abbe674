package nat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// SharedSocket returns a handle on the UDP socket h's QUIC transport
// listens on for IPv4, through which datagrams that are not QUIC can be
// read and written, and the local side for the classifier: the listen
// address and the host's interface addresses. cm is the host's quicreuse
// connection manager (libp2p.WithFxOption(fx.Populate(&cm))). Closing the
// handle leaves the socket to QUIC.
func SharedSocket(cm *quicreuse.ConnManager, h host.Host) (net.PacketConn, Local, error) {
	if cm == nil {
		return nil, Local{}, errors.New("nat: no QUIC connection manager (is QUIC off?)")
	}
	for _, a := range h.Network().ListenAddresses() {
		ap, ok := quic4(a)
		if !ok {
			continue
		}
		pc, err := cm.SharedNonQUICPacketConn("udp4", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, Local{}, fmt.Errorf("nat: share the QUIC socket %s: %w", ap, err)
		}
		return pc, Local{Listen: []netip.AddrPort{ap}, Interfaces: interfaceAddrs()}, nil
	}
	return nil, Local{}, errors.New("nat: the host listens on no IPv4 QUIC address")
}

// quic4 reads /ip4/A/udp/P/quic-v1.
func quic4(a ma.Multiaddr) (netip.AddrPort, bool) {
	if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err != nil {
		return netip.AddrPort{}, false
	}
	ipS, err := a.ValueForProtocol(ma.P_IP4)
	if err != nil {
		return netip.AddrPort{}, false
	}
	portS, err := a.ValueForProtocol(ma.P_UDP)
	if err != nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ipS, portS))
	return ap, err == nil
}

// QUICAddrs are the IPv4 QUIC addresses (ip:port) among addrs: where a
// peer's STUN answers, on its QUIC socket.
func QUICAddrs(addrs []ma.Multiaddr) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		if ap, ok := quic4(a); ok && !ap.Addr().IsUnspecified() {
			out = append(out, ap)
		}
	}
	return out
}

func interfaceAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

var publicMu sync.Mutex

// CountAsPublic makes addresses in the given prefixes count as public to
// libp2p and to this package, where go-multiaddr would call them
// unroutable or private: for a test bed in 198.18.0.0/15, whose hole
// punching, relay and address code would otherwise ignore every address.
// It edits manet's exported ranges, which are read on every call. Only for
// test beds; the daemon logs loudly when it is on.
func CountAsPublic(prefixes []netip.Prefix) {
	publicMu.Lock()
	defer publicMu.Unlock()
	drop := func(nets []*net.IPNet) []*net.IPNet {
		var out []*net.IPNet
		for _, n := range nets {
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				out = append(out, n)
				continue
			}
			ones, _ := n.Mask.Size()
			for _, keep := range subtract(netip.PrefixFrom(ip.Unmap(), ones).Masked(), prefixes) {
				out = append(out, &net.IPNet{IP: keep.Addr().AsSlice(), Mask: net.CIDRMask(keep.Bits(), keep.Addr().BitLen())})
			}
		}
		return out
	}
	manet.Unroutable4 = drop(manet.Unroutable4)
	manet.Private4 = drop(manet.Private4)
	manet.Unroutable6 = drop(manet.Unroutable6)
	manet.Private6 = drop(manet.Private6)
}

// subtract is what of p lies outside every prefix in minus, as prefixes.
func subtract(p netip.Prefix, minus []netip.Prefix) []netip.Prefix {
	for _, m := range minus {
		if m.Bits() <= p.Bits() && m.Contains(p.Addr()) {
			return nil // p lies inside m
		}
	}
	overlaps := false
	for _, m := range minus {
		overlaps = overlaps || m.Overlaps(p)
	}
	if !overlaps || p.Bits() == p.Addr().BitLen() {
		return []netip.Prefix{p}
	}
	// Split p in halves and keep what of each is left.
	lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
	hiAddr := p.Addr().AsSlice()
	bit := p.Bits()
	hiAddr[bit/8] |= 0x80 >> (bit % 8)
	ha, _ := netip.AddrFromSlice(hiAddr)
	hi := netip.PrefixFrom(ha, p.Bits()+1)
	return append(subtract(lo, minus), subtract(hi, minus)...)
}

// IsPublic says whether ip counts as a public address (manet's view, with
// CountAsPublic applied).
func IsPublic(ip netip.Addr) bool {
	a, err := manet.FromIP(net.IP(ip.AsSlice()))
	return err == nil && manet.IsPublicAddr(a)
}

package overlay

import (
	"net"
	"strconv"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// FuzzAddrsFromHostPort: the "ip:port" memberlist gossips for a node is
// turned into a TCP and a QUIC multiaddr, or into nothing. What comes out
// must name that IP and port, which IPPort must read back.
func FuzzAddrsFromHostPort(f *testing.F) {
	for _, s := range []string{"198.18.0.3:4001", "[::1]:4001", "[fe80::1%eth0]:1", "1.2.3.4:65535", "1.2.3.4:0", "host:1", ":80", "1.2.3.4:+80", "[::ffff:1.2.3.4]:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs := addrsFromHostPort(s)
		if addrs == nil {
			return
		}
		if len(addrs) != 2 {
			t.Fatalf("%q: %d addresses, want TCP and QUIC", s, len(addrs))
		}
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			t.Fatalf("%q gave addresses but does not split: %v", s, err)
		}
		want := net.ParseIP(h)
		port, err := strconv.Atoi(p)
		if want == nil || err != nil {
			t.Fatalf("%q gave addresses but host or port does not parse", s)
		}
		for i, a := range addrs {
			ip, network, got, ok := IPPort(a)
			if !ok || !ip.Equal(want) || got != port || network != [...]string{"tcp", "udp"}[i] {
				t.Fatalf("%q: address %d is %s, read back as %v %s %d (%v)", s, i, a, ip, network, got, ok)
			}
			if _, err := ma.NewMultiaddrBytes(a.Bytes()); err != nil {
				t.Fatalf("%q: address %s does not decode from its own bytes: %v", s, a, err)
			}
		}
	})
}

// FuzzIPPort reads the IP and port of any multiaddr a peer gossips (in its
// node metadata, as bytes). It must not panic, and what it reports must be
// an IP of 4 or 16 bytes and a port that fits 16 bits.
func FuzzIPPort(f *testing.F) {
	for _, s := range []string{"/ip4/198.18.0.1/tcp/4001", "/ip6/::1/udp/4002/quic-v1", "/dns4/example.invalid/tcp/1", "/ip4/1.2.3.4/udp/1/quic-v1/p2p/12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"} {
		f.Add(mustAddrs(f, s)[0].Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return
		}
		ip, network, port, ok := IPPort(a)
		if !ok {
			return
		}
		if (len(ip) != net.IPv4len && len(ip) != net.IPv6len) || port < 0 || port > 65535 || (network != "tcp" && network != "udp") {
			t.Fatalf("%s read as ip %v (%d bytes), %s port %d", a, ip, len(ip), network, port)
		}
	})
}

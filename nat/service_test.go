package nat

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/nat/stunx"
)

func listenUDP(t *testing.T, ip string) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("SKIPPING: cannot listen on %s (this system has no 127.0.0.0/8 aliases): %v", ip, err)
	}
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Three peers on loopback, each with its own socket: two answer STUN, and
// the third, asking both, learns that its address is public (the answers
// show its own address) and how far away they are.
func TestServiceClassifiesThroughRealSockets(t *testing.T) {
	c1, a1 := listenUDP(t, "127.0.0.2")
	c2, a2 := listenUDP(t, "127.0.0.3")
	c3, a3 := listenUDP(t, "127.0.0.1")
	s1 := NewService(c1, Local{Listen: []netip.AddrPort{a1}}, ServiceConfig{})
	defer s1.Close()
	s2 := NewService(c2, Local{Listen: []netip.AddrPort{a2}}, ServiceConfig{})
	defer s2.Close()
	client := NewService(c3, Local{Listen: []netip.AddrPort{a3}}, ServiceConfig{
		Servers: func() []netip.AddrPort { return []netip.AddrPort{a1, a2, a1} },
		Retry:   100 * time.Millisecond,
	})
	defer client.Close()
	testwait.Until(t, 10*time.Second, func() error {
		if m := client.Mapping(); m.Kind != Public || m.Servers != 2 || m.Addr != a3 || !m.PortPreserved {
			return fmt.Errorf("mapping %+v, want public at %s from 2 servers", m, a3)
		}
		return nil
	})
	r := client.Report()
	if len(r.Servers) != 2 || r.Servers[0].Mapped != a3 || r.ClassifiedAfterSec < 0 {
		t.Fatalf("report %+v", r)
	}
	if r.SentBytes < 2*int64(stunx.RequestSize) {
		t.Fatalf("sent %d bytes for at least two requests", r.SentBytes)
	}
	if got := s1.Report().Answered + s2.Report().Answered; got < 2 {
		t.Fatalf("servers answered %d requests, want 2 or more", got)
	}
}

// A peer that does not serve STUN stays silent, and answers from a server
// that was not asked, or with a transaction nobody sent, count for nothing.
func TestServiceRefusesWhatItShould(t *testing.T) {
	c1, a1 := listenUDP(t, "127.0.0.2")
	quiet := NewService(c1, Local{Listen: []netip.AddrPort{a1}}, ServiceConfig{Answer: func() bool { return false }})
	defer quiet.Close()
	c2, a2 := listenUDP(t, "127.0.0.1")
	client := NewService(c2, Local{Listen: []netip.AddrPort{a2}}, ServiceConfig{
		Servers: func() []netip.AddrPort { return []netip.AddrPort{a1} },
		Retry:   50 * time.Millisecond,
	})
	defer client.Close()
	// A forged answer from a third socket, for a transaction it makes up.
	forger, _ := listenUDP(t, "127.0.0.3")
	defer forger.Close()
	responder := stunx.NewResponder(stunx.ResponderConfig{})
	tx, _ := stunx.NewTxID(rand.Reader)
	forged, ok, why := responder.Answer(stunx.NewBindingRequest(tx), netip.MustParseAddrPort("198.18.9.9:9"), time.Now())
	if !ok {
		t.Fatal(why)
	}
	for range 5 {
		_, _ = forger.WriteToUDPAddrPort(forged, a2)
	}
	// Ten rounds go unanswered (and the forgeries arrive among them).
	testwait.Until(t, 10*time.Second, func() error {
		if sent := client.Report().SentBytes; sent < 10*int64(stunx.RequestSize) {
			return fmt.Errorf("%d bytes of requests so far", sent)
		}
		return nil
	})
	if r := client.Report(); len(r.Servers) != 0 || client.Mapping().Kind != Unknown {
		t.Fatalf("client took an answer: %+v", r)
	}
	if quiet.Report().Answered != 0 {
		t.Fatal("a peer told not to answer answered")
	}
}

func TestCountAsPublic(t *testing.T) {
	tb := netip.MustParseAddr("198.18.1.2")
	inside := netip.MustParseAddr("198.19.1.2")
	if IsPublic(tb) {
		t.Fatal("198.18.1.2 counts as public before the switch")
	}
	CountAsPublic([]netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")})
	if !IsPublic(tb) {
		t.Fatal("198.18.1.2 does not count as public after the switch")
	}
	// The rest of manet's 198.18.0.0/15 stays unroutable: NAT insides.
	if IsPublic(inside) {
		t.Fatal("198.19.1.2 counts as public, though only 198.18.0.0/16 was switched")
	}
	if IsPublic(netip.MustParseAddr("10.1.2.3")) || IsPublic(netip.MustParseAddr("127.0.0.1")) {
		t.Fatal("private addresses count as public")
	}
}

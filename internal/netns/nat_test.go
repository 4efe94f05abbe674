//go:build linux

package netns

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Site indices of the testbed newNATTestbed builds.
const (
	siteEasy  = iota // Easy, 2 inside hosts
	siteHard         // Hard, 1 inside host
	siteShort        // Easy, 1 inside host, UDP timeout shortTimeout
	siteEasy2        // Easy, 1 inside host
)

const shortTimeout = 3 * time.Second

// newNATTestbed builds 3 public hosts and the sites above, or skips the test
// loudly when this machine cannot.
func newNATTestbed(t *testing.T) *Testbed {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip("SKIPPED: network namespace testbed unavailable: " + err.Error())
	}
	start := time.Now()
	tb, err := NewWithNATs("nat", 3, []SiteSpec{
		{Kind: Easy, Inside: 2},
		{Kind: Hard, Inside: 1},
		{Kind: Easy, Inside: 1, UDPTimeout: shortTimeout},
		{Kind: Easy, Inside: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NewWithNATs took %v", time.Since(start))
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	return tb
}

// udpIn opens a UDP socket on an ephemeral port of addr inside namespace ns.
func udpIn(t *testing.T, tb *Testbed, ns string, addr netip.Addr) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := tb.DoIn(ns, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoServer starts a UDP "what is my address" server on public host j: it
// answers every datagram with the source address and port it came from. It
// returns the server's socket, which tests also use to send unsolicited
// datagrams from the server's address.
func echoServer(t *testing.T, tb *Testbed, j int) *net.UDPConn {
	t.Helper()
	c := udpIn(t, tb, tb.Hosts()[j].Name, tb.Hosts()[j].Addr)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	return c
}

func localAddr(c *net.UDPConn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// mapped asks the echo server at srv, from c, which address it sees, and
// returns that. The query is resent a few times in case a datagram is lost.
func mapped(t *testing.T, c *net.UDPConn, srv netip.AddrPort) netip.AddrPort {
	t.Helper()
	buf := make([]byte, 1500)
	for range 3 {
		if _, err := c.WriteToUDPAddrPort([]byte("?"), srv); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if from != srv {
			t.Fatalf("reply from %v, want %v", from, srv)
		}
		ap, err := netip.ParseAddrPort(string(buf[:n]))
		if err != nil {
			t.Fatalf("echo server %v answered %q: %v", srv, buf[:n], err)
		}
		return ap
	}
	t.Fatalf("no answer from echo server %v to %v", srv, localAddr(c))
	return netip.AddrPort{}
}

// receive waits up to wait for a datagram on c and returns its payload and
// sender, or ok false if none came.
func receive(t *testing.T, c *net.UDPConn, wait time.Duration) (payload string, from netip.AddrPort, ok bool) {
	t.Helper()
	buf := make([]byte, 1500)
	c.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "", netip.AddrPort{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n]), from, true
}

// send writes payload from c to dst.
func send(t *testing.T, c *net.UDPConn, dst netip.AddrPort, payload string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(payload), dst); err != nil {
		t.Fatal(err)
	}
}

// tcpGreeter starts a TCP server on addr in namespace ns that writes every
// client's remote address to it and closes the connection.
func tcpGreeter(t *testing.T, tb *Testbed, ns string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := tb.DoIn(ns, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.RemoteAddr().String()))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// tcpAsk dials addr from namespace ns and returns what the greeter says.
func tcpAsk(tb *Testbed, ns string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := tb.DoIn(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(c)
	return string(got), err
}

func TestNAT(t *testing.T) {
	tb := newNATTestbed(t)
	hosts, sites := tb.Hosts(), tb.Sites()
	if len(hosts) != 3 || len(sites) != 4 {
		t.Fatalf("%d hosts and %d sites, want 3 and 4", len(hosts), len(sites))
	}
	var echo []netip.AddrPort
	var echoConn []*net.UDPConn
	for j := range hosts {
		c := echoServer(t, tb, j)
		echoConn = append(echoConn, c)
		echo = append(echo, localAddr(c))
	}

	t.Run("Layout", func(t *testing.T) {
		for k, s := range sites {
			if want := netip.AddrFrom4([4]byte{198, 18, byte(len(hosts) + k + 1), 2}); s.Public != want {
				t.Errorf("site %d public address %v, want %v", k, s.Public, want)
			}
			for j, h := range s.Inside {
				if want := netip.AddrFrom4([4]byte{198, 19, byte(k + 1), byte(j + 2)}); h.Addr != want {
					t.Errorf("site %d inside host %d address %v, want %v", k, j, h.Addr, want)
				}
				out, err := tb.CommandIn(h.Name, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if !strings.Contains(string(out), h.Addr.String()+"/24") {
					t.Errorf("%s addresses %q lack %v/24", h.Name, out, h.Addr)
				}
			}
			if len(s.Router) > 15 {
				t.Errorf("NAT router name %q longer than 15", s.Router)
			}
		}
		if sites[siteEasy].Kind != Easy || sites[siteHard].Kind != Hard {
			t.Errorf("kinds %v, %v; want easy, hard", sites[siteEasy].Kind, sites[siteHard].Kind)
		}
		if err := tb.CommandIn("nosuchns", "true").Run(); err == nil {
			t.Error("CommandIn with a foreign namespace ran")
		}
		if err := tb.DoIn("nosuchns", func() error { return nil }); err == nil {
			t.Error("DoIn with a foreign namespace succeeded")
		}
	})

	t.Run("EasyMapping", func(t *testing.T) {
		s := sites[siteEasy]
		in := s.Inside[0]
		c := udpIn(t, tb, in.Name, in.Addr)
		local := localAddr(c)
		m0, m1 := mapped(t, c, echo[0]), mapped(t, c, echo[1])
		t.Logf("local %v mapped to %v (host 0) and %v (host 1)", local, m0, m1)
		if m0 != m1 {
			t.Errorf("easy NAT mapped one local port to %v and %v", m0, m1)
		}
		if want := netip.AddrPortFrom(s.Public, local.Port()); m0 != want || m1 != want {
			t.Errorf("mapped %v and %v, want %v (NAT address, local port)", m0, m1, want)
		}
	})

	t.Run("HardMapping", func(t *testing.T) {
		s := sites[siteHard]
		in := s.Inside[0]
		const tries = 5
		differ := 0
		for range tries {
			c := udpIn(t, tb, in.Name, in.Addr)
			m0, m1 := mapped(t, c, echo[0]), mapped(t, c, echo[1])
			t.Logf("local %v mapped to %v and %v", localAddr(c), m0, m1)
			if m0.Addr() != s.Public || m1.Addr() != s.Public {
				t.Errorf("mapped %v and %v, want address %v", m0, m1, s.Public)
			}
			if m0.Port() != m1.Port() {
				differ++
			}
			c.Close()
		}
		// Two random ports out of ~64k collide with probability ~2e-5 per
		// try; more than one collision in 5 tries means no randomisation.
		if differ < tries-1 {
			t.Errorf("hard NAT gave different ports for two destinations in %d of %d tries, want ≥ %d", differ, tries, tries-1)
		}
	})

	t.Run("FilterUnsolicited", func(t *testing.T) {
		for _, k := range []int{siteEasy, siteHard} {
			t.Run(sites[k].Kind.String(), func(t *testing.T) {
				in := sites[k].Inside[0]
				c := udpIn(t, tb, in.Name, in.Addr)
				m := mapped(t, c, echo[0]) // opens the mapping toward host 0 only

				// Host 2 has never been sent to: its datagrams to the
				// mapped port must be dropped.
				for range 3 {
					send(t, echoConn[2], m, "intruder")
				}
				if p, from, ok := receive(t, c, 700*time.Millisecond); ok {
					t.Errorf("unsolicited datagram %q from %v reached the inside host", p, from)
				}
				// Host 0 was contacted: its datagrams must arrive.
				send(t, echoConn[0], m, "hello")
				if p, from, ok := receive(t, c, 2*time.Second); !ok || p != "hello" || from != echo[0] {
					t.Errorf("datagram from contacted host: got %q from %v (ok %v), want \"hello\" from %v", p, from, ok, echo[0])
				}
				// The dropped packets must not have claimed the mapping:
				// an easy NAT still maps the local port to the same
				// public port toward host 2.
				m2 := mapped(t, c, echo[2])
				if k == siteEasy && m2 != m {
					t.Errorf("after unsolicited packets from host 2 the mapping toward it is %v, want %v", m2, m)
				}
			})
		}
	})

	t.Run("NoInsideRoutes", func(t *testing.T) {
		a, b, peer := sites[siteEasy].Inside[0], sites[siteEasy2].Inside[0], sites[siteEasy].Inside[1]
		srvA := tcpGreeter(t, tb, a.Name, a.Addr)
		srvB := tcpGreeter(t, tb, b.Name, b.Addr)
		pub := tcpGreeter(t, tb, hosts[0].Name, hosts[0].Addr)

		// Outbound through the NAT works, seen from the NAT's address.
		got, err := tcpAsk(tb, a.Name, pub, 2*time.Second)
		if err != nil {
			t.Fatalf("inside host -> public host: %v", err)
		}
		if ap, err := netip.ParseAddrPort(got); err != nil || ap.Addr() != sites[siteEasy].Public {
			t.Errorf("public host saw the inside host as %q, want address %v", got, sites[siteEasy].Public)
		}
		// Hosts of one site reach each other directly over the LAN.
		got, err = tcpAsk(tb, peer.Name, srvA, 2*time.Second)
		if err != nil {
			t.Errorf("inside host -> inside host of the same site: %v", err)
		} else if ap, err := netip.ParseAddrPort(got); err != nil || ap.Addr() != peer.Addr {
			t.Errorf("same-site peer seen as %q, want address %v", got, peer.Addr)
		}

		// Nothing reaches an inside address from outside its site.
		if _, err := tcpAsk(tb, a.Name, srvB, time.Second); err == nil {
			t.Error("inside host of site 0 reached inside host of site 3 by its inside address")
		}
		if _, err := tcpAsk(tb, hosts[1].Name, srvA, time.Second); err == nil {
			t.Error("public host reached an inside host by its inside address")
		}
		// Nor the NAT's public address on the inside server's port.
		nat := netip.AddrPortFrom(sites[siteEasy].Public, srvA.Port())
		if _, err := tcpAsk(tb, hosts[1].Name, nat, 500*time.Millisecond); err == nil {
			t.Errorf("public host reached %v without any port forwarding", nat)
		}

		// Even when the core router routes the site's LAN to the NAT
		// router, the NAT router does not forward unsolicited inbound.
		lan := fmt.Sprintf("198.19.%d.0/24", siteEasy+1)
		route := func(verb string) {
			t.Helper()
			out, err := tb.CommandIn(tb.router, "ip", "route", verb, lan, "via", sites[siteEasy].Public.String()).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		}
		route("add")
		defer route("del")
		if _, err := tcpAsk(tb, hosts[1].Name, srvA, 500*time.Millisecond); err == nil {
			t.Error("public host reached an inside host through a route to its LAN")
		}
		if _, err := tcpAsk(tb, a.Name, pub, 2*time.Second); err != nil {
			t.Errorf("inside host -> public host with the LAN route in place: %v", err)
		}
	})

	t.Run("UDPTimeout", func(t *testing.T) {
		s := sites[siteShort]
		for _, c := range []struct {
			site int
			want time.Duration
		}{{siteShort, shortTimeout}, {siteEasy, DefaultUDPTimeout}} {
			want := fmt.Sprint(int(c.want / time.Second))
			for _, f := range []string{"nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"} {
				var got []byte
				err := tb.DoIn(sites[c.site].Router, func() (err error) {
					got, err = os.ReadFile("/proc/sys/net/netfilter/" + f)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(string(got)) != want {
					t.Errorf("site %d %s = %q, want %s", c.site, f, got, want)
				}
			}
		}
		if s.UDPTimeout != shortTimeout {
			t.Errorf("Site.UDPTimeout = %v, want %v", s.UDPTimeout, shortTimeout)
		}

		in := s.Inside[0]
		c := udpIn(t, tb, in.Name, in.Addr)
		m := mapped(t, c, echo[0])
		// Well within the timeout, a datagram from host 0 gets through
		// (and refreshes the mapping).
		time.Sleep(s.UDPTimeout / 3)
		send(t, echoConn[0], m, "within")
		if p, _, ok := receive(t, c, 2*time.Second); !ok || p != "within" {
			t.Fatalf("datagram %s after the last one: got %q (ok %v), want \"within\"", s.UDPTimeout/3, p, ok)
		}
		// After the timeout plus a margin without traffic the mapping is
		// gone and the same datagram is unsolicited.
		time.Sleep(s.UDPTimeout + 1500*time.Millisecond)
		send(t, echoConn[0], m, "late")
		if p, _, ok := receive(t, c, time.Second); ok {
			t.Errorf("datagram %q got through %v after the mapping's last packet (timeout %v)", p, s.UDPTimeout+1500*time.Millisecond, s.UDPTimeout)
		}
	})

	t.Run("FlushConntrack", func(t *testing.T) {
		in := sites[siteEasy].Inside[1]
		c := udpIn(t, tb, in.Name, in.Addr)
		m := mapped(t, c, echo[1])
		send(t, echoConn[1], m, "before")
		if p, _, ok := receive(t, c, 2*time.Second); !ok || p != "before" {
			t.Fatalf("datagram before the flush: got %q (ok %v)", p, ok)
		}
		if err := tb.FlushConntrack(siteEasy); err != nil {
			t.Fatal(err)
		}
		send(t, echoConn[1], m, "after")
		if p, _, ok := receive(t, c, 700*time.Millisecond); ok {
			t.Errorf("datagram %q got through after FlushConntrack", p)
		}
		if err := tb.FlushConntrack(len(sites)); err == nil {
			t.Error("FlushConntrack with a bad index succeeded")
		}
	})

	t.Run("Close", func(t *testing.T) {
		names := tb.names()
		if len(names) != len(hosts)+len(sites)+5 {
			t.Fatalf("names() lists %d namespaces, want %d", len(names), len(hosts)+len(sites)+5)
		}
		if err := tb.Close(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list: %v: %s", err, out)
		}
		listed := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				listed[f[0]] = true
			}
		}
		for _, name := range append([]string{tb.router}, names...) {
			if listed[name] {
				t.Errorf("namespace %s still exists after Close", name)
			}
		}
		if err := tb.DoIn(sites[0].Inside[0].Name, func() error { return nil }); err == nil {
			t.Error("DoIn after Close succeeded")
		}
		if err := tb.FlushConntrack(0); err == nil {
			t.Error("FlushConntrack after Close succeeded")
		}
	})
}

func TestNewWithNATsRejectsBad(t *testing.T) {
	for _, c := range []struct {
		public int
		specs  []SiteSpec
	}{
		{0, nil},
		{-1, []SiteSpec{{Kind: Easy, Inside: 1}}},
		{MaxHosts, []SiteSpec{{Kind: Easy, Inside: 1}}},
		{1, []SiteSpec{{Kind: Easy, Inside: 0}}},
		{1, []SiteSpec{{Kind: NATKind(7), Inside: 1}}},
		{1, []SiteSpec{{Kind: Hard, Inside: 1, UDPTimeout: -time.Second}}},
		{1, []SiteSpec{{Kind: Easy, Inside: MaxHosts}, {Kind: Hard, Inside: 1}}},
	} {
		if tb, err := NewWithNATs("nt", c.public, c.specs); err == nil {
			tb.Close()
			t.Errorf("NewWithNATs(%d, %+v) succeeded", c.public, c.specs)
		}
	}
}

func TestNATKindString(t *testing.T) {
	for k, want := range map[NATKind]string{Easy: "easy", Hard: "hard", NATKind(5): "NATKind(5)"} {
		if got := k.String(); got != want {
			t.Errorf("NATKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

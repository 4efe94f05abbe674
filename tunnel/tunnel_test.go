package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
)

func TestWireRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := WriteRequest(&b, "web"); err != nil {
		t.Fatal(err)
	}
	if name, err := ReadRequest(bufio.NewReader(&b)); err != nil || name != "web" {
		t.Fatalf("request: %q %v", name, err)
	}
	for _, why := range []string{"", "not exposed"} {
		b.Reset()
		if err := WriteAnswer(&b, why); err != nil {
			t.Fatal(err)
		}
		err := ReadAnswer(bufio.NewReader(&b))
		var ref RefusedError
		if why == "" && err != nil || why != "" && (!errors.As(err, &ref) || ref.Why != why) {
			t.Fatalf("answer %q read back as %v", why, err)
		}
	}
	for _, bad := range [][]byte{{2, 3, 'a', 'b', 'c'}, {1, 0}, {1, 0xff, 0xff, 0xff, 0x7f}, {1, 5, 'a'}} {
		if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(bad))); !errors.Is(err, ErrMalformed) {
			t.Errorf("request %x: %v, want ErrMalformed", bad, err)
		}
	}
	for _, bad := range [][]byte{{7, 0}, {0, 1, 'x'}, {1, 0}} {
		if err := ReadAnswer(bufio.NewReader(bytes.NewReader(bad))); !errors.Is(err, ErrMalformed) {
			t.Errorf("answer %x: %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add([]byte{1, 3, 'w', 'e', 'b'})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := ReadRequest(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && (len(name) == 0 || len(name) > maxName) {
			t.Fatalf("accepted a name of %d bytes", len(name))
		}
	})
}

func FuzzReadAnswer(f *testing.F) {
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 2, 'n', 'o'})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ReadAnswer(bufio.NewReader(bytes.NewReader(b)))
		var ref RefusedError
		if errors.As(err, &ref) && (ref.Why == "" || len(ref.Why) > maxMessage) {
			t.Fatalf("a refusal with a reason of %d bytes", len(ref.Why))
		}
	})
}

func TestOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b, c, d := peer.ID("a"), peer.ID("b"), peer.ID("c"), peer.ID("d")
	got := Order([]Candidate{
		{ID: a, Cost: 10},
		{ID: b, Cost: 2},
		{ID: c}, // unmeasured: after the measured
		{ID: d, Cost: 1, Failed: now.Add(-time.Second)}, // failed lately: last
	}, now, 0)
	if want := []peer.ID{b, a, c, d}; !slicesEqual(got, want) {
		t.Fatalf("Order = %v, want %v", got, want)
	}
	// A failure long ago no longer counts.
	got = Order([]Candidate{{ID: a, Cost: 10}, {ID: d, Cost: 1, Failed: now.Add(-time.Hour)}}, now, 0)
	if got[0] != d {
		t.Fatalf("Order = %v, want d first", got)
	}
	// Equal costs (within a band) share the load by the rotation.
	firsts := map[peer.ID]bool{}
	for r := range uint64(4) {
		firsts[Order([]Candidate{{ID: a, Cost: 5}, {ID: b, Cost: 5.1}}, now, r)[0]] = true
	}
	if len(firsts) != 2 {
		t.Fatalf("two equal providers: only %v ever came first", firsts)
	}
}

func slicesEqual(a, b []peer.ID) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// backend is a TCP server for the tests: it answers each connection with
// "got N bytes" once the client has shut down its writes (so a tunnel
// that loses the half-close hangs it), after writing the first line of a
// PROXY header it saw, if any.
func backend(t *testing.T) (addr string, proxyLines chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	proxyLines = make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				body, _ := io.ReadAll(c)
				if bytes.HasPrefix(body, proxySignature) {
					n := 16 + (int(body[14])<<8 | int(body[15]))
					proxyLines <- string(body[16+3 : n])
					body = body[n:]
				}
				fmt.Fprintf(c, "got %d bytes", len(body))
			}()
		}
	}()
	return ln.Addr().String(), proxyLines
}

type fixture struct {
	hosts []host.Host
	srvs  []*Server
}

func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	hosts, err := p2phost.Loopback(n, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2phost.CloseAll(hosts, 5*time.Second) })
	if err := p2phost.ConnectAll(hosts); err != nil {
		t.Fatal(err)
	}
	f := &fixture{hosts: hosts}
	for _, h := range hosts {
		s := NewServer(h, nil)
		t.Cleanup(func() { s.Close(time.Second) })
		f.srvs = append(f.srvs, s)
	}
	return f
}

func (f *fixture) forward(t *testing.T, from int, name string, providers ...int) *Forwarder {
	t.Helper()
	var ids []peer.ID
	for _, i := range providers {
		ids = append(ids, f.hosts[i].ID())
	}
	h := f.hosts[from]
	fw, err := Start(Forward{Name: name, Listen: "127.0.0.1:0"}, Dialer{
		Open: func(ctx context.Context, p peer.ID, proto protocol.ID, _ string) (network.Stream, error) {
			return h.NewStream(ctx, p, proto)
		},
		Providers: func(context.Context, string) ([]peer.ID, error) { return ids, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fw.Close)
	return fw
}

// roundTrip sends payload through the forward, shuts down its writes,
// and returns the whole answer.
func roundTrip(t *testing.T, fw *Forwarder, payload []byte) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", fw.Listen, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// A connection through a tunnel reaches the exposed backend, both
// half-closes pass, and the counts follow.
func TestTunnelCarriesAConnectionWithHalfClose(t *testing.T) {
	f := newFixture(t, 2)
	addr, _ := backend(t)
	if err := f.srvs[1].Expose(Expose{Name: "echo", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	fw := f.forward(t, 0, "echo", 1)
	payload := bytes.Repeat([]byte("x"), 300_000)
	got, err := roundTrip(t, fw, payload)
	if err != nil || got != "got 300000 bytes" {
		t.Fatalf("answer %q, %v", got, err)
	}
	if st := fw.Status(); st.BytesOut != 300_000 || st.BytesIn != int64(len(got)) || st.Conns != 1 {
		t.Fatalf("forward counts %+v", st)
	}
	if st := f.srvs[1].List(); len(st) != 1 || st[0].BytesIn != 300_000 || st[0].Conns != 1 {
		t.Fatalf("expose counts %+v", st)
	}
}

// The exposing side refuses names it does not expose and callers not on
// the allow-list, and it passes the caller's peer ID by PROXY v2 when
// asked to.
func TestTunnelRefusalsAndProxyProtocol(t *testing.T) {
	f := newFixture(t, 3)
	addr, proxy := backend(t)
	if err := f.srvs[2].Expose(Expose{Name: "db", Addr: addr, Allow: []peer.ID{f.hosts[0].ID()}, ProxyProtocol: true}); err != nil {
		t.Fatal(err)
	}
	// A refused connection is closed (or reset) without an answer.
	nothing := f.forward(t, 0, "nothing", 2)
	if got, _ := roundTrip(t, nothing, []byte("hi")); got != "" {
		t.Fatalf("a tunnel to a name that is not exposed answered %q", got)
	}
	if st := nothing.Status(); st.Failed != 1 {
		t.Fatalf("forward counts after a refusal: %+v", st)
	}
	if st := f.srvs[2].List(); st[0].Conns != 0 {
		t.Fatal("a tunnel for a name that is not exposed reached the backend")
	}
	got, _ := roundTrip(t, f.forward(t, 1, "db", 2), []byte("hi"))
	if got != "" {
		t.Fatalf("a caller not on the allow-list got %q", got)
	}
	if st := f.srvs[2].List(); st[0].Refused != 1 || st[0].Conns != 0 {
		t.Fatalf("after a caller off the allow-list: %+v", st[0])
	}
	got, err := roundTrip(t, f.forward(t, 0, "db", 2), []byte("hi"))
	if err != nil || got != "got 2 bytes" {
		t.Fatalf("an allowed caller got %q (%v)", got, err)
	}
	select {
	case id := <-proxy:
		if id != f.hosts[0].ID().String() {
			t.Fatalf("PROXY header named %q, want %s", id, f.hosts[0].ID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no PROXY header reached the backend")
	}
	for _, bad := range []Expose{{Name: "Bad", Addr: addr}, {Name: "ok", Addr: "nohostport"}, {Name: "ok", Addr: addr, Class: "fast"}} {
		if err := f.srvs[0].Expose(bad); err == nil {
			t.Errorf("Expose(%+v) took it", bad)
		}
	}
}

// With two providers, connections go on through the other when one dies.
func TestTunnelFailsOverToAnotherProvider(t *testing.T) {
	f := newFixture(t, 3)
	addr, _ := backend(t)
	for _, i := range []int{1, 2} {
		if err := f.srvs[i].Expose(Expose{Name: "web", Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	fw := f.forward(t, 0, "web", 1, 2)
	for range 4 {
		if got, err := roundTrip(t, fw, []byte("abc")); err != nil || got != "got 3 bytes" {
			t.Fatalf("before the kill: %q %v", got, err)
		}
	}
	if err := f.hosts[1].Close(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := roundTrip(t, fw, []byte("abc"))
			if err != nil || got != "got 3 bytes" {
				errs <- fmt.Errorf("after the kill: %q %v", got, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !strings.Contains(fmt.Sprint(f.srvs[2].List()), "web") || f.srvs[2].List()[0].Conns < 8 {
		t.Fatalf("the surviving provider served %d connections", f.srvs[2].List()[0].Conns)
	}
}

// Closing a forward ends its open connections even when the backend keeps
// its side open (an HTTP server with keep-alive, say).
func TestForwardCloseEndsOpenConnections(t *testing.T) {
	f := newFixture(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c) }() // reads, never answers, never closes
		}
	}()
	if err := f.srvs[1].Expose(Expose{Name: "quiet", Addr: ln.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	fw := f.forward(t, 0, "quiet", 1)
	c, err := net.Dial("tcp", fw.Listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 5*time.Second, func() error {
		if fw.Status().Active != 1 {
			return errors.New("the connection is not through yet")
		}
		return nil
	})
	done := make(chan struct{})
	go func() { fw.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the forward waited on an open connection")
	}
}

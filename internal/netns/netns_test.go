//go:build linux

package netns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// newTestbed builds a testbed with n hosts or skips the test loudly when
// this machine cannot.
func newTestbed(t *testing.T, n int) *Testbed {
	t.Helper()
	if err := Available(); err != nil {
		t.Skip("SKIPPED: network namespace testbed unavailable: " + err.Error())
	}
	start := time.Now()
	tb, err := New("nt", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("New(%d hosts) took %v", n, time.Since(start))
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	return tb
}

// listen starts a TCP server inside host j that greets every connection
// with "hi" and closes it. It returns the server's address.
func listen(t *testing.T, tb *Testbed, j int) string {
	t.Helper()
	var ln net.Listener
	err := tb.Do(j, func() (err error) {
		ln, err = net.Listen("tcp", tb.Hosts()[j].Addr.String()+":0")
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
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// dial connects from inside host i to addr within timeout and reads the
// greeting.
func dial(tb *Testbed, i int, addr string, timeout time.Duration) error {
	var c net.Conn
	err := tb.Do(i, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(got) != "hi" {
		return fmt.Errorf("got %q, want %q", got, "hi")
	}
	return nil
}

// transfer sends size bytes over TCP from host from to host to and returns
// how long it took until the receiver had them all.
func transfer(t *testing.T, tb *Testbed, from, to, size int) time.Duration {
	t.Helper()
	var ln net.Listener
	err := tb.Do(to, func() (err error) {
		ln, err = net.Listen("tcp", tb.Hosts()[to].Addr.String()+":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		err error
	}
	received := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			received <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		n, err := io.Copy(io.Discard, c)
		received <- result{n, err}
	}()

	start := time.Now()
	var c net.Conn
	err = tb.Do(from, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(bytes.Repeat([]byte{'x'}, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-received
	if r.err != nil || r.n != int64(size) {
		t.Fatalf("received %d of %d bytes: %v", r.n, size, r.err)
	}
	return time.Since(start)
}

func TestTestbed(t *testing.T) {
	const n = 4
	tb := newTestbed(t, n)
	hosts := tb.Hosts()
	addrs := make([]string, n)
	for j := range n {
		addrs[j] = listen(t, tb, j)
	}

	t.Run("Reach", func(t *testing.T) {
		for j := 1; j < n; j++ {
			if err := dial(tb, 0, addrs[j], 2*time.Second); err != nil {
				t.Errorf("host 0 -> host %d: %v", j, err)
			}
		}
	})

	t.Run("CutHeal", func(t *testing.T) {
		if err := tb.Cut(0, 2); err != nil {
			t.Fatal(err)
		}
		if err := tb.Cut(0, 2); err != nil { // idempotent
			t.Fatal(err)
		}
		if err := dial(tb, 0, addrs[2], 300*time.Millisecond); err == nil {
			t.Error("host 0 -> host 2 works despite Cut(0, 2)")
		}
		if err := dial(tb, 2, addrs[0], 300*time.Millisecond); err == nil {
			t.Error("host 2 -> host 0 works despite Cut(0, 2)")
		}
		if err := dial(tb, 0, addrs[1], 2*time.Second); err != nil {
			t.Errorf("host 0 -> host 1 after Cut(0, 2): %v", err)
		}
		if err := dial(tb, 1, addrs[2], 2*time.Second); err != nil {
			t.Errorf("host 1 -> host 2 after Cut(0, 2): %v", err)
		}
		if err := tb.Heal(0, 2); err != nil {
			t.Fatal(err)
		}
		if err := tb.Heal(0, 2); err != nil { // idempotent
			t.Fatal(err)
		}
		if err := dial(tb, 0, addrs[2], 2*time.Second); err != nil {
			t.Errorf("host 0 -> host 2 after Heal(0, 2): %v", err)
		}
	})

	t.Run("SetRate", func(t *testing.T) {
		const size = 2 << 20 // 2 MiB: about 2.1 s at 8 Mbit/s
		full := transfer(t, tb, 1, 0, size)
		t.Logf("uncapped 1 -> 0: %v", full)
		if err := tb.SetRate(1, 8_000_000); err != nil {
			t.Fatal(err)
		}
		for _, dir := range [][2]int{{1, 0}, {0, 1}} {
			d := transfer(t, tb, dir[0], dir[1], size)
			t.Logf("capped %d -> %d: %v", dir[0], dir[1], d)
			if d < 1500*time.Millisecond {
				t.Errorf("capped %d -> %d took %v, want ≥ 1.5s", dir[0], dir[1], d)
			}
		}
		if err := tb.SetRate(1, 0); err != nil {
			t.Fatal(err)
		}
		if err := tb.SetRate(1, 0); err != nil { // idempotent
			t.Fatal(err)
		}
		d := transfer(t, tb, 1, 0, size)
		t.Logf("uncapped again 1 -> 0: %v", d)
		if d >= 1500*time.Millisecond {
			t.Errorf("after SetRate(1, 0) the transfer still took %v", d)
		}
	})

	t.Run("Command", func(t *testing.T) {
		out, err := tb.Command(3, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if want := hosts[3].Addr.String() + "/24"; !strings.Contains(string(out), want) {
			t.Errorf("host 3 addresses %q lack %s", out, want)
		}
		if err := tb.Command(n, "true").Run(); err == nil {
			t.Error("Command with a bad index ran")
		}
	})

	t.Run("Close", func(t *testing.T) {
		if err := tb.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tb.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Fatalf("ip netns list: %v: %s", err, out)
		}
		listed := map[string]bool{}
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				listed[f[0]] = true // "NAME" or "NAME (id: N)"
			}
		}
		for _, name := range append([]string{tb.router}, tb.names()...) {
			if listed[name] {
				t.Errorf("namespace %s still exists after Close", name)
			}
		}
		if err := tb.Cut(0, 1); err == nil {
			t.Error("Cut after Close succeeded")
		}
		if err := tb.Do(0, func() error { return nil }); err == nil {
			t.Error("Do after Close succeeded")
		}
	})
}

func TestNewRejectsBadCount(t *testing.T) {
	for _, n := range []int{0, -1, MaxHosts + 1} {
		if tb, err := New("nt", n); err == nil {
			tb.Close()
			t.Errorf("New(%d) succeeded", n)
		}
	}
}

func TestDoErrors(t *testing.T) {
	tb := newTestbed(t, 1)
	want := errors.New("from fn")
	if err := tb.Do(0, func() error { return want }); err != want {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if err := tb.Do(1, func() error { return nil }); err == nil {
		t.Error("Do with a bad index succeeded")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic in fn was not re-raised")
			}
		}()
		tb.Do(0, func() error { panic("boom") })
	}()
	if err := tb.Cut(0, 0); err == nil {
		t.Error("Cut(0, 0) succeeded")
	}
	if err := tb.Cut(0, 1); err == nil {
		t.Error("Cut with a bad index succeeded")
	}
}

func TestMaxHosts(t *testing.T) {
	tb := newTestbed(t, MaxHosts)
	last := MaxHosts - 1
	addr := listen(t, tb, last)
	if err := dial(tb, 0, addr, 2*time.Second); err != nil {
		t.Errorf("host 0 -> host %d: %v", last, err)
	}
}

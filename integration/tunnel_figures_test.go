package integration

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/node"
)

var tunnelFigures = flag.Bool("tunnel.figures", false,
	"TestTunnelFigureCappedLink with 3 rounds of 32 MiB instead of 1 of 4 MiB")

// A tunnel on a link that is slower than the CPU (1 round of 4 MiB by
// default, which checks the path; the figure with -tunnel.figures), the case the figure's
// anchors describe: two peers in the namespace testbed, the exposer's
// link capped at 100 Mbit/s both ways; 32 MiB sent to a sink behind the
// exposer, by plain TCP across the link and through a forward, rounds
// alternating. Plain TCP on the same link is at least what a bare libp2p
// stream can do there, so tunnel ÷ TCP bounds tunnel ÷ stream from below.
func TestTunnelFigureCappedLink(t *testing.T) {
	tb, c := testbedCluster(t, 2)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	user, exposer := c.Peers[0], c.Peers[1]
	if err := tb.SetRate(1, 100_000_000); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := tb.Do(1, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(exposer.ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
			}()
		}
	}()
	if code, _, errOut := runPeer(t, "expose", "sink", ln.Addr().String(), "--home", exposer.Home); code != 0 {
		t.Fatalf("expose: exit %d: %s", code, errOut)
	}
	code, out, errOut := runPeer(t, "forward", "sink", "--listen", net.JoinHostPort(user.ip, "0"), "--class", "throughput", "--home", user.Home, "--json")
	if code != 0 {
		t.Fatalf("forward: exit %d: %s", code, errOut)
	}
	var fw node.ServiceDone
	if err := json.Unmarshal([]byte(out), &fw); err != nil {
		t.Fatal(err)
	}
	size, rounds := 4<<20, 1 // enough to check the path; -tunnel.figures for the figure
	if *tunnelFigures {
		size, rounds = 32<<20, 3
	}
	send := func(addr string) (float64, error) {
		var bps float64
		err := tb.Do(0, func() error {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			buf := make([]byte, 256<<10)
			start := time.Now()
			for left := size; left > 0; left -= len(buf) {
				if _, err := c.Write(buf[:min(left, len(buf))]); err != nil {
					return err
				}
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				return err
			}
			var got [8]byte
			if _, err := io.ReadFull(c, got[:]); err != nil {
				return err
			}
			if n := binary.BigEndian.Uint64(got[:]); n != uint64(size) {
				return fmt.Errorf("the sink counted %d of %d bytes", n, size)
			}
			bps = float64(size) / time.Since(start).Seconds()
			return nil
		})
		return bps, err
	}
	// The providers' record reaches the ring in the background.
	Eventually(t, 15*time.Second, pollInterval, func() error { _, err := send(fw.Listen); return err })
	var tun, raw []float64
	for range rounds {
		for _, k := range []struct {
			addr string
			out  *[]float64
		}{{fw.Listen, &tun}, {ln.Addr().String(), &raw}} {
			bps, err := send(k.addr)
			if err != nil {
				t.Fatal(err)
			}
			*k.out = append(*k.out, bps)
		}
	}
	mt, mr := stats.Median(tun), stats.Median(raw)
	figure(t, "tunnel_over_tcp_100mbit", fmt.Sprintf("%.3f", mt/mr),
		fmt.Sprintf("tunnel %.1f Mbit/s, plain TCP %.1f Mbit/s, medians of %d rounds of %d MiB (tunnel %v, TCP %v)", mt*8/1e6, mr*8/1e6, rounds, size>>20, tun, raw))
	if mt < 0.5*mr {
		t.Errorf("the tunnel moved %.1f Mbit/s where plain TCP moved %.1f", mt*8/1e6, mr*8/1e6)
	}
}

// Package tunnelbench is `peer bench tunnel`: on loopback, a TCP
// connection forwarded through a tunnel against a bare libp2p stream on
// the same transport and against plain TCP: throughput, request/response
// latency, and many concurrent connections through one tunnel.
package tunnelbench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/tunnel"
)

// Config sizes the bench.
type Config struct {
	Bytes      int64 // moved one way in each throughput round
	Rounds     int   // throughput rounds of each kind; medians are printed
	Pings      int   // request/response round trips of each kind
	Concurrent int   // connections open at once through one tunnel
	Transport  string
}

// Result is what the bench prints.
type Result struct {
	Transport        string  `json:"transport"`
	Bytes            int64   `json:"bytes_per_round"`
	TunnelBps        float64 `json:"tunnel_bytes_per_s"`
	StreamBps        float64 `json:"bare_stream_bytes_per_s"`
	TCPBps           float64 `json:"tcp_bytes_per_s"`
	TunnelOverStream float64 `json:"tunnel_over_bare_stream"`
	// CPU seconds this process (both ends, and the backend) spent per
	// GiB moved, medians; and the tunnel/stream ratio that CPU alone
	// allows where both are CPU-bound (the stream's CPU per byte over the
	// tunnel's).
	TunnelCPUPerGiB     float64 `json:"tunnel_cpu_seconds_per_gib"`
	StreamCPUPerGiB     float64 `json:"bare_stream_cpu_seconds_per_gib"`
	TCPCPUPerGiB        float64 `json:"tcp_cpu_seconds_per_gib"`
	CPUBoundOverStream  float64 `json:"cpu_bound_tunnel_over_bare_stream"`
	TunnelRTTp50ms      float64 `json:"tunnel_rtt_p50_ms"`
	TunnelRTTp99ms      float64 `json:"tunnel_rtt_p99_ms"`
	StreamRTTp50ms      float64 `json:"bare_stream_rtt_p50_ms"`
	StreamRTTp99ms      float64 `json:"bare_stream_rtt_p99_ms"`
	TCPRTTp50ms         float64 `json:"tcp_rtt_p50_ms"`
	TCPRTTp99ms         float64 `json:"tcp_rtt_p99_ms"`
	AddedP50ms          float64 `json:"tunnel_adds_p50_ms_over_bare_stream"`
	Concurrent          int     `json:"concurrent"`
	ConcurrentServed    int     `json:"concurrent_served"`
	ConcurrentFailed    int     `json:"concurrent_failed"`
	ConcurrentSeconds   float64 `json:"concurrent_seconds"`
	ConcurrentFirstFail string  `json:"concurrent_first_error,omitempty"`
}

const (
	sinkProto protocol.ID = "/peer/bench/sink/1.0.0"
	echoProto protocol.ID = "/peer/bench/echo/1.0.0"
)

// Run runs the bench.
func Run(cfg Config) (Result, error) {
	res := Result{Transport: cfg.Transport, Bytes: cfg.Bytes, Concurrent: cfg.Concurrent}
	hosts, err := p2phost.Loopback(2, cfg.Transport)
	if err != nil {
		return res, err
	}
	defer p2phost.CloseAll(hosts, 10*time.Second)
	if err := p2phost.ConnectAll(hosts); err != nil {
		return res, err
	}
	a, b := hosts[0], hosts[1]
	// Backends on b's side: a sink that answers the byte count at end of
	// stream, and an echo.
	sinkAddr, stopSink, err := listen(serveSink)
	if err != nil {
		return res, err
	}
	defer stopSink()
	echoAddr, stopEcho, err := listen(serveEcho)
	if err != nil {
		return res, err
	}
	defer stopEcho()
	b.SetStreamHandler(sinkProto, func(st network.Stream) { serveSink(st) })
	b.SetStreamHandler(echoProto, func(st network.Stream) { serveEcho(st) })
	srv := tunnel.NewServer(b, nil)
	defer srv.Close(5 * time.Second)
	for name, addr := range map[string]string{"sink": sinkAddr, "echo": echoAddr} {
		if err := srv.Expose(tunnel.Expose{Name: name, Addr: addr}); err != nil {
			return res, err
		}
	}
	dialer := tunnel.Dialer{
		Open: func(ctx context.Context, p peer.ID, proto protocol.ID, _ string) (network.Stream, error) {
			return a.NewStream(ctx, p, proto)
		},
		Providers: func(context.Context, string) ([]peer.ID, error) { return []peer.ID{b.ID()}, nil },
	}
	fwd := map[string]*tunnel.Forwarder{}
	for _, name := range []string{"sink", "echo"} {
		fw, err := tunnel.Start(tunnel.Forward{Name: name, Listen: "127.0.0.1:0"}, dialer)
		if err != nil {
			return res, err
		}
		defer fw.Close()
		fwd[name] = fw
	}
	stream := func(proto protocol.ID) func() (io.ReadWriteCloser, error) {
		return func() (io.ReadWriteCloser, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return a.NewStream(ctx, b.ID(), proto)
		}
	}
	tcp := func(addr string) func() (io.ReadWriteCloser, error) {
		return func() (io.ReadWriteCloser, error) { return net.DialTimeout("tcp", addr, 10*time.Second) }
	}

	// Throughput, alternating the three kinds each round.
	// Each round's CPU time too: on a machine whose cores the bare stream
	// already fills, the tunnel's two more TCP legs (client to forwarder,
	// exposer to backend) take CPU from it, and its CPU per byte says how
	// far it can get.
	var tun, str, raw, tunCPU, strCPU, rawCPU []float64
	gib := float64(cfg.Bytes) / (1 << 30)
	for range cfg.Rounds {
		for _, k := range []struct {
			open     func() (io.ReadWriteCloser, error)
			out, cpu *[]float64
		}{{tcp(fwd["sink"].Listen), &tun, &tunCPU}, {stream(sinkProto), &str, &strCPU}, {tcp(sinkAddr), &raw, &rawCPU}} {
			cpu0 := stats.CPUTime()
			bps, err := throughput(k.open, cfg.Bytes)
			if err != nil {
				return res, err
			}
			*k.out = append(*k.out, bps)
			*k.cpu = append(*k.cpu, (stats.CPUTime()-cpu0).Seconds()/gib)
		}
	}
	res.TunnelBps, res.StreamBps, res.TCPBps = stats.Median(tun), stats.Median(str), stats.Median(raw)
	res.TunnelOverStream = res.TunnelBps / res.StreamBps
	res.TunnelCPUPerGiB, res.StreamCPUPerGiB, res.TCPCPUPerGiB = stats.Median(tunCPU), stats.Median(strCPU), stats.Median(rawCPU)
	if res.TunnelCPUPerGiB > 0 {
		res.CPUBoundOverStream = res.StreamCPUPerGiB / res.TunnelCPUPerGiB
	}

	// Latency: 64-byte requests and answers on one connection of each kind.
	for _, k := range []struct {
		open     func() (io.ReadWriteCloser, error)
		p50, p99 *float64
	}{{tcp(fwd["echo"].Listen), &res.TunnelRTTp50ms, &res.TunnelRTTp99ms}, {stream(echoProto), &res.StreamRTTp50ms, &res.StreamRTTp99ms}, {tcp(echoAddr), &res.TCPRTTp50ms, &res.TCPRTTp99ms}} {
		rtts, err := pingPong(k.open, cfg.Pings)
		if err != nil {
			return res, err
		}
		*k.p50, *k.p99 = quantile(rtts, 0.5), quantile(rtts, 0.99)
	}
	res.AddedP50ms = res.TunnelRTTp50ms - res.StreamRTTp50ms

	// Many connections at once through one tunnel, each held open until
	// all are, then a round trip on each.
	start := time.Now()
	served, failed, first := concurrent(tcp(fwd["echo"].Listen), cfg.Concurrent)
	res.ConcurrentSeconds = time.Since(start).Seconds()
	res.ConcurrentServed, res.ConcurrentFailed = served, failed
	if first != nil {
		res.ConcurrentFirstFail = first.Error()
	}
	return res, nil
}

// listen runs serve for each connection of a loopback listener.
func listen(serve func(io.ReadWriteCloser)) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }, nil
}

// serveSink reads to the end of stream and answers how many bytes came.
func serveSink(c io.ReadWriteCloser) {
	defer c.Close()
	// Read as a backend built for throughput would, in large reads:
	// io.Discard's own 8 KiB reads would cost the TCP kinds a system call
	// each and the bare stream none, which measures the sink, not the path.
	n, _ := io.CopyBuffer(discard{}, onlyReader{c}, make([]byte, 256<<10))
	_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// serveEcho sends back what it reads.
func serveEcho(c io.ReadWriteCloser) {
	defer c.Close()
	_, _ = io.Copy(c, c)
}

// discard takes every write and keeps nothing; unlike io.Discard it has
// no ReadFrom, so the copy's own buffer is used.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// onlyReader hides a connection's WriteTo, for the same reason.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

type closeWriter interface{ CloseWrite() error }

// throughput sends n bytes and waits for the sink's count.
func throughput(open func() (io.ReadWriteCloser, error), n int64) (float64, error) {
	c, err := open()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 256<<10)
	start := time.Now()
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, err
		}
		left -= k
	}
	cw, ok := c.(closeWriter)
	if !ok {
		return 0, errors.New("connection without a half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return 0, err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return 0, fmt.Errorf("the sink's count: %w", err)
	}
	if m := int64(binary.BigEndian.Uint64(got[:])); m != n {
		return 0, fmt.Errorf("the sink counted %d bytes of %d", m, n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// pingPong times k round trips of 64 bytes, after a few to warm up.
func pingPong(open func() (io.ReadWriteCloser, error), k int) ([]float64, error) {
	c, err := open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := make([]byte, 64)
	back := make([]byte, 64)
	r := bufio.NewReader(c)
	var out []float64
	for i := range k + 20 {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(r, back); err != nil {
			return nil, err
		}
		if i >= 20 {
			out = append(out, float64(time.Since(start).Microseconds())/1000)
		}
	}
	return out, nil
}

// concurrent opens n connections, holds them all open, then does a round
// trip on each; it counts those that work.
func concurrent(open func() (io.ReadWriteCloser, error), n int) (served, failed int, first error) {
	var mu sync.Mutex
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		failed++
		if first == nil {
			first = err
		}
	}
	conns := make([]io.ReadWriteCloser, n)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := open()
			if err != nil {
				fail(err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			if d, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
				_ = d.SetDeadline(time.Now().Add(30 * time.Second))
			}
			msg := []byte("are you there?")
			if _, err := c.Write(msg); err != nil {
				fail(err)
				return
			}
			back := make([]byte, len(msg))
			if _, err := io.ReadFull(c, back); err != nil {
				fail(err)
				return
			}
			mu.Lock()
			served++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return served, failed, first
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

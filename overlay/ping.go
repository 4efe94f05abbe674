package overlay

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/internal/p2phost"
)

// PingProtocol echoes fixed-size payloads; `peer ping` measures with it
// over whatever path the overlay chooses.
const PingProtocol = "/peer/ping/1.0.0"

const (
	pingSize     = 32
	pingIdle     = 10 * time.Second
	pingMaxPings = 1024 // on one stream
)

// ServePing answers pings on the overlay's host.
func (o *Overlay) ServePing() {
	o.host.SetStreamHandler(PingProtocol, func(s network.Stream) {
		defer s.Close()
		free, err := p2phost.Reserve(s, pingSize)
		if err != nil {
			s.Reset()
			return
		}
		defer free()
		buf := make([]byte, pingSize)
		for range pingMaxPings {
			_ = s.SetDeadline(time.Now().Add(pingIdle))
			if _, err := io.ReadFull(s, buf); err != nil {
				if err != io.EOF {
					s.Reset()
				}
				return
			}
			if _, err := s.Write(buf); err != nil {
				s.Reset()
				return
			}
		}
	})
}

// PingResult is one ping's round trip and the path it took.
type PingResult struct {
	Peer  peer.ID `json:"peer"`
	RTTms float64 `json:"rtt_ms"`
	Via   peer.ID `json:"via,omitempty"` // "" for the direct path
}

// Path names the path for people: "direct" or "via ID".
func (r PingResult) Path() string {
	if r.Via == "" {
		return "direct"
	}
	return "via " + r.Via.String()
}

// Ping opens a latency-class stream to p and times one echo on it. The
// stream open is not timed; the echo, on the chosen path, is. A ping that
// gets no echo marks p suspect, so that path choice re-probes it at once.
func (o *Overlay) Ping(ctx context.Context, p peer.ID) (PingResult, error) {
	s, err := o.OpenStream(ctx, p, PingProtocol, ClassLatency)
	if err != nil {
		return PingResult{}, err
	}
	defer s.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	out := make([]byte, pingSize)
	_, _ = rand.Read(out)
	in := make([]byte, pingSize)
	start := time.Now()
	if _, err := s.Write(out); err != nil {
		s.Reset()
		o.Suspect(p)
		return PingResult{}, fmt.Errorf("ping %s: %w", p, err)
	}
	if _, err := io.ReadFull(s, in); err != nil {
		s.Reset()
		o.Suspect(p)
		return PingResult{}, fmt.Errorf("ping %s (%s): no echo: %w", p, pathName(ViaOf(s)), err)
	}
	rtt := time.Since(start)
	if string(in) != string(out) {
		s.Reset()
		return PingResult{}, fmt.Errorf("ping %s: the echo differs from what was sent", p)
	}
	return PingResult{Peer: p, RTTms: float64(rtt.Microseconds()) / 1000, Via: ViaOf(s)}, nil
}

func pathName(via peer.ID) string { return PingResult{Via: via}.Path() }

// OnCircuit says whether a stream rides a relay circuit.
func OnCircuit(s network.Stream) bool {
	if ViaOf(s) != "" {
		return false // a RON-forwarded stream
	}
	_, err := s.Conn().RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// HasDirect says whether h has a direct (not relayed) connection to p.
func HasDirect(h host.Host, p peer.ID) bool {
	for _, c := range h.Network().ConnsToPeer(p) {
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil && !c.Stat().Limited {
			return true
		}
	}
	return false
}

// PingEvent is one ping of a session on a kept stream.
type PingEvent struct {
	Seq    int     `json:"seq"`
	AtMs   int64   `json:"at_unix_ms"` // when the ping was sent
	RTTms  float64 `json:"rtt_ms,omitempty"`
	Via    peer.ID `json:"via,omitempty"`
	Stream int     `json:"stream"` // 1 for the first stream; higher once replaced
	Error  string  `json:"error,omitempty"`
}

// PingSession pings p count times, every interval, on one stream kept
// open, as a long-lived application stream would be. A ping without an
// echo within timeout marks p suspect and the stream is replaced by a new
// one from OpenStream, on whatever path is then best; fn sees every ping.
// It shows how long traffic on an open stream stalls when a path breaks.
func (o *Overlay) PingSession(ctx context.Context, p peer.ID, count int, interval, timeout time.Duration, fn func(PingEvent)) error {
	var s network.Stream
	streams, onStream := 0, 0
	defer func() {
		if s != nil {
			s.Reset()
		}
	}()
	out, in := make([]byte, pingSize), make([]byte, pingSize)
	next := time.Now()
	for seq := 1; seq <= count; seq++ {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		next = next.Add(interval)
		if time.Until(next) < -interval {
			next = time.Now() // fell behind after timeouts: no burst
		}
		ev := PingEvent{Seq: seq, AtMs: time.Now().UnixMilli()}
		if s != nil && onStream == pingMaxPings {
			// The server ends a stream after this many; start the next.
			_ = s.Close()
			s = nil
		}
		if s != nil && OnCircuit(s) && HasDirect(o.host, p) {
			// A direct connection came up (a hole punch, say): move
			// off the relay, as a long-lived stream should.
			_ = s.Close()
			s = nil
		}
		if s == nil {
			onStream = 0
			octx, cancel := context.WithTimeout(ctx, timeout)
			var err error
			s, err = o.OpenStream(octx, p, PingProtocol, ClassLatency)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				ev.Error, ev.Stream = err.Error(), streams
				fn(ev)
				s = nil
				continue
			}
			streams++
		}
		ev.Stream, ev.Via = streams, ViaOf(s)
		onStream++
		_, _ = rand.Read(out)
		start := time.Now()
		_ = s.SetDeadline(start.Add(timeout))
		_, err := s.Write(out)
		if err == nil {
			_, err = io.ReadFull(s, in)
		}
		if err == nil && string(in) != string(out) {
			err = fmt.Errorf("the echo differs from what was sent")
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			ev.Error = fmt.Sprintf("no echo on stream %d (%s): %v", streams, pathName(ev.Via), err)
			o.Suspect(p)
			s.Reset()
			s = nil
		} else {
			ev.RTTms = float64(time.Since(start).Microseconds()) / 1000
		}
		fn(ev)
	}
	return nil
}

package overlay

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
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

// Package server is the intermediate of one-hop forwarding: asked by a
// member to forward a stream to another, it checks both, opens a stream to
// the destination and splices the two. It sees only ciphertext (the ends
// secure the spliced bytes themselves; see the client package, which this
// one does not import) and bounds how many streams it splices, in all and
// for one source.
package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/defaults"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/overlay/onehop/wire"
)

// Defaults of Config, and how long the setup of a forwarded stream may take.
const (
	DefaultMaxForward        = 256 // spliced streams at once
	DefaultMaxForwardPerPeer = 64  // of them for one source
	SetupTimeout             = 10 * time.Second
	spliceBuf                = 32 << 10
)

// Allow decides whether this peer forwards a stream from src to dst: ""
// to forward it, else the reason it is refused.
type Allow func(src, dst peer.ID) string

// Config tunes a server. Zero fields take the defaults.
type Config struct {
	MaxForward        int // streams spliced at once (DefaultMaxForward)
	MaxForwardPerPeer int // of them for one source (DefaultMaxForwardPerPeer)
	Allow             Allow
	Log               *slog.Logger
}

// Server forwards streams for the peers Allow lets through.
type Server struct {
	h   host.Host
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	total int             // streams spliced now
	by    map[peer.ID]int // of them, by source

	spliced atomic.Int64
	bytes   atomic.Int64 // spliced, both directions
}

// New starts forwarding for h.
func New(h host.Host, cfg Config) *Server {
	defaults.Set(&cfg.MaxForward, DefaultMaxForward)
	defaults.Set(&cfg.MaxForwardPerPeer, DefaultMaxForwardPerPeer)
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Allow == nil {
		cfg.Allow = func(peer.ID, peer.ID) string { return "" }
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{h: h, cfg: cfg, log: cfg.Log, ctx: ctx, cancel: cancel, by: map[peer.ID]int{}}
	h.SetStreamHandler(wire.FwdProtocol, s.handle)
	return s
}

// Close stops taking forwarding requests; streams being spliced go on
// until either end closes them.
func (s *Server) Close() {
	s.h.RemoveStreamHandler(wire.FwdProtocol)
	s.cancel()
}

// Spliced is how many streams this peer has forwarded.
func (s *Server) Spliced() int64 { return s.spliced.Load() }

// Bytes is how many bytes this peer has forwarded, both directions.
func (s *Server) Bytes() int64 { return s.bytes.Load() }

// handle serves a member's request to forward a stream to another.
func (s *Server) handle(st network.Stream) {
	src := st.Conn().RemotePeer()
	if wire.ViaOf(st) != "" {
		wire.Refuse(st, "a forwarded stream is not forwarded again")
		s.log.Info("refused to forward a forwarded stream", "from", src)
		return
	}
	_ = st.SetDeadline(time.Now().Add(SetupTimeout))
	dst, err := wire.ReadFwdHeader(st)
	if err != nil {
		s.log.Info("bad forwarding request", "from", src, "err", err)
		st.Reset()
		return
	}
	var reason string
	switch {
	case dst == s.h.ID():
		reason = "the intermediate is the destination"
	case dst == src:
		reason = "the destination is the source"
	default:
		reason = s.cfg.Allow(src, dst)
	}
	if reason == "" && !s.acquire(src) {
		reason = "forwarding limit reached"
	}
	if reason != "" {
		s.log.Info("refused to forward", "from", src, "to", dst, "why", reason)
		wire.Refuse(st, reason)
		return
	}
	defer s.release(src)
	// The splice's two buffers, charged to the source's stream.
	free, err := p2phost.Reserve(st, 2*spliceBuf)
	if err != nil {
		s.log.Info("refused to forward", "from", src, "to", dst, "why", err)
		wire.Refuse(st, "the intermediate is out of memory for forwarding")
		return
	}
	defer free()
	ctx, cancel := context.WithTimeout(s.ctx, SetupTimeout)
	out, err := s.h.NewStream(ctx, dst, wire.FwdInProtocol)
	cancel()
	if err != nil {
		wire.Refuse(st, fmt.Sprintf("the intermediate cannot reach %s: %v", dst, err))
		return
	}
	_ = out.SetWriteDeadline(time.Now().Add(SetupTimeout))
	if _, err := out.Write(wire.AppendFwdHeader(nil, src)); err != nil {
		out.Reset()
		wire.Refuse(st, fmt.Sprintf("the intermediate cannot reach %s: %v", dst, err))
		return
	}
	_ = out.SetWriteDeadline(time.Time{})
	_ = st.SetDeadline(time.Time{})
	s.spliced.Add(1)
	splice(st, out, &s.bytes)
}

func (s *Server) acquire(src peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.total >= s.cfg.MaxForward || s.by[src] >= s.cfg.MaxForwardPerPeer {
		return false
	}
	s.total++
	s.by[src]++
	return true
}

func (s *Server) release(src peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.by[src]--; s.by[src] <= 0 {
		delete(s.by, src)
	}
}

// splice copies each stream into the other until both directions end. A
// direction that ends cleanly half-closes the other side; one that fails
// resets both.
func splice(a, b network.Stream, n *atomic.Int64) {
	var wg sync.WaitGroup
	half := func(dst, src network.Stream) {
		defer wg.Done()
		buf := make([]byte, spliceBuf)
		k, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		n.Add(k)
		if err != nil {
			a.Reset()
			b.Reset()
			return
		}
		_ = dst.CloseWrite()
	}
	wg.Add(2)
	go half(b, a)
	go half(a, b)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// readerOnly and writerOnly keep io.CopyBuffer on the plain Read/Write path.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

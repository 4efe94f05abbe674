package tunnel

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/names"
)

// Expose is a service this peer offers under a name.
type Expose struct {
	Name string `json:"name"`
	Addr string `json:"addr"` // the backend, host:port; the only address tunnels of Name reach
	// Allow, when not empty, lists the only peers that may use it.
	Allow []peer.ID `json:"allow,omitempty"`
	// Class is the traffic class forwarders use: latency, throughput or
	// default.
	Class string `json:"class,omitempty"`
	// ProxyProtocol sends the backend a PROXY protocol v2 header with the
	// caller's peer ID before the caller's bytes.
	ProxyProtocol bool `json:"proxy_protocol,omitempty"`
}

// Check says what is wrong with e, or nil.
func (e Expose) Check() error {
	if err := names.Validate(e.Name); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(e.Addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("backend address %q: want host:port", e.Addr)
	}
	switch e.Class {
	case "", "default", "latency", "throughput":
	default:
		return fmt.Errorf("class %q: want latency, throughput or default", e.Class)
	}
	return nil
}

// backendTimeout bounds the dial of a backend, and headerTimeout the
// caller's request.
const (
	backendTimeout = 5 * time.Second
	headerTimeout  = 10 * time.Second
)

// Server serves the services this peer exposes.
type Server struct {
	h   host.Host
	log *slog.Logger

	mu       sync.Mutex
	services map[string]*exposed
	wg       sync.WaitGroup
	closed   bool
}

type exposed struct {
	Expose
	n Counters
}

// NewServer serves tunnels on h.
func NewServer(h host.Host, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{h: h, log: log.With("layer", "tunnel"), services: map[string]*exposed{}}
	h.SetStreamHandler(Protocol, s.handle)
	return s
}

// Expose offers e (replacing an earlier expose of the same name).
func (s *Server) Expose(e Expose) error {
	if err := e.Check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.services[e.Name]
	x := &exposed{Expose: e}
	if old != nil {
		x.n.In.Store(old.n.In.Load())
		x.n.Out.Store(old.n.Out.Load())
		x.n.Conns.Store(old.n.Conns.Load())
	}
	s.services[e.Name] = x
	return nil
}

// Unexpose stops offering name; tunnels already open run on.
func (s *Server) Unexpose(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.services[name]
	delete(s.services, name)
	return ok
}

// ExposeStatus is an exposed service and its counts.
type ExposeStatus struct {
	Expose
	BytesIn  int64 `json:"bytes_in"`  // from callers to the backend
	BytesOut int64 `json:"bytes_out"` // from the backend to callers
	Conns    int64 `json:"connections"`
	Active   int64 `json:"active"`
	Refused  int64 `json:"refused"`
}

// List reports the exposed services by name.
func (s *Server) List() []ExposeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ExposeStatus, 0, len(s.services))
	for _, x := range s.services {
		out = append(out, ExposeStatus{Expose: x.Expose, BytesIn: x.n.In.Load(), BytesOut: x.n.Out.Load(),
			Conns: x.n.Conns.Load(), Active: x.n.Active.Load(), Refused: x.n.Refused.Load()})
	}
	slices.SortFunc(out, func(a, b ExposeStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Close stops serving and waits for open tunnels to end, at most wait.
func (s *Server) Close(wait time.Duration) {
	s.h.RemoveStreamHandler(Protocol)
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		s.log.Warn("tunnels still open at shutdown were left to the host's close")
	}
}

func (s *Server) handle(st network.Stream) {
	caller := st.Conn().RemotePeer()
	_ = st.SetDeadline(time.Now().Add(headerTimeout))
	r := bufio.NewReaderSize(st, 512)
	name, err := ReadRequest(r)
	if err != nil {
		s.log.Info("refused a tunnel: bad request", "peer", caller, "err", err)
		_ = st.Reset()
		return
	}
	s.mu.Lock()
	x := s.services[name]
	closed := s.closed
	if x != nil && !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	refuse := func(why string) {
		s.log.Info("refused a tunnel", "service", name, "peer", caller, "why", why)
		_ = WriteAnswer(st, why)
		_ = st.Close()
	}
	if x == nil || closed {
		refuse(fmt.Sprintf("service %q is not exposed on this peer", name))
		return
	}
	defer s.wg.Done()
	if len(x.Allow) > 0 && !slices.Contains(x.Allow, caller) {
		x.n.Refused.Add(1)
		refuse(fmt.Sprintf("peer %s may not use %q", caller, name))
		return
	}
	conn, err := net.DialTimeout("tcp", x.Addr, backendTimeout)
	if err != nil {
		x.n.Refused.Add(1)
		refuse(fmt.Sprintf("backend of %q: %v", name, err))
		return
	}
	backend := conn.(*net.TCPConn)
	if x.ProxyProtocol {
		if _, err := backend.Write(proxyHeader(caller)); err != nil {
			_ = backend.Close()
			refuse(fmt.Sprintf("backend of %q: %v", name, err))
			return
		}
	}
	if err := WriteAnswer(st, ""); err != nil {
		_ = backend.Close()
		_ = st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	x.n.Conns.Add(1)
	x.n.Active.Add(1)
	defer x.n.Active.Add(-1)
	// Bytes the reader took past the request belong to the backend.
	var from halfCloser = st
	if r.Buffered() > 0 {
		from = bufferedStream{st, r}
	}
	splice(from, backend, &x.n.In, &x.n.Out)
}

// bufferedStream reads first what a bufio.Reader holds.
type bufferedStream struct {
	network.Stream
	r *bufio.Reader
}

func (b bufferedStream) Read(p []byte) (int, error) { return b.r.Read(p) }

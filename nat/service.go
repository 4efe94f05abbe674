package nat

import (
	"crypto/rand"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/peer-overlay/peer/nat/stunx"
)

// The STUN binding: it sends Binding requests out of the libp2p QUIC
// socket (so the mapping learnt is the one peers dial), feeds the answers
// to a Classifier, and answers other peers' requests with a
// stunx.Responder on the same socket. The socket is shared with quic-go,
// which hands over the datagrams that are not QUIC through one reader with
// a short queue, so the read loop never blocks on anything else.

// ServiceConfig tunes a Service. Zero fields take defaults.
type ServiceConfig struct {
	// Servers lists the STUN servers to ask, best first (the node gives
	// supernodes, then other public members). At most MaxServers distinct
	// IPs are asked each round.
	Servers func() []netip.AddrPort
	// Answer says whether to answer STUN requests now (a public peer or a
	// supernode). Nil answers always.
	Answer func() bool
	// Refresh is the period of STUN rounds once the mapping is known
	// (default 25 s, jittered by ±20%): it keeps the NAT binding of the
	// socket alive against a 30 s UDP timeout, and sees a rebinding.
	Refresh time.Duration
	// Retry is the period while fewer than two servers have answered
	// (default 1 s).
	Retry time.Duration
	// Timeout is how long a request waits for its answer (default 3 s).
	Timeout time.Duration
	// OnChange, if set, is called when the mapping changes; it must not
	// block or call back into the service.
	OnChange  func()
	Responder stunx.ResponderConfig
	Log       *slog.Logger
}

// quickRounds is how many rounds go at the Retry pace before backing off.
const quickRounds = 5

// MaxServers is how many distinct server IPs one STUN round asks.
const MaxServers = 4

// ServerReport is one STUN server as this peer last heard it.
type ServerReport struct {
	Addr   netip.AddrPort `json:"addr"`
	RTTms  float64        `json:"rtt_ms"`
	Mapped netip.AddrPort `json:"mapped"`
	AgoSec float64        `json:"ago_s"`
}

// Service runs STUN on a shared socket.
type Service struct {
	pc  net.PacketConn
	cfg ServiceConfig
	log *slog.Logger

	mu       sync.Mutex
	cls      *Classifier
	resp     *stunx.Responder
	pending  map[stunx.TxID]request
	servers  map[netip.AddrPort]ServerReport
	heard    map[netip.AddrPort]time.Time // when each server last answered
	firstAt  time.Time                    // the first answer
	knownAt  time.Time                    // when the mapping was first not Unknown
	refused  map[string]bool              // "source reason", logged once
	sent     int64                        // bytes of STUN sent
	received int64                        // bytes of STUN received
	answered int64                        // requests answered
	started  time.Time
	samples  []sample // total bytes at the start of each round, the last few minutes

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup
}

// sample is the STUN bytes sent and received so far, at a time.
type sample struct {
	at    time.Time
	bytes int64
}

// rateWindow is the span over which Report's rate is measured.
const rateWindow = 2 * time.Minute

// request is a Binding request waiting for its answer.
type request struct {
	server netip.AddrPort
	sent   time.Time
}

// NewService starts STUN on pc, whose local addresses are described by
// local. Close stops it (and leaves pc open: it is the caller's).
func NewService(pc net.PacketConn, local Local, cfg ServiceConfig) *Service {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 25 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Servers == nil {
		cfg.Servers = func() []netip.AddrPort { return nil }
	}
	s := &Service{
		pc: pc, cfg: cfg, log: cfg.Log,
		cls: NewClassifier(local), resp: stunx.NewResponder(cfg.Responder),
		pending: map[stunx.TxID]request{}, servers: map[netip.AddrPort]ServerReport{},
		heard: map[netip.AddrPort]time.Time{}, refused: map[string]bool{},
		started: time.Now(), kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	s.wg.Add(2)
	go s.readLoop()
	go s.probeLoop()
	return s
}

// Close stops the service. The read loop ends when its read returns: the
// caller closes the shared socket's handle, which ends the read at once.
func (s *Service) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
		close(s.stop)
	}
	err := s.pc.Close()
	s.wg.Wait()
	return err
}

// Kick asks for a STUN round now (for example, when a new server joined).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Mapping is the classifier's verdict now.
func (s *Service) Mapping() Mapping {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cls.Result()
}

// SeesLocal reports whether a STUN answer shows this socket's own address
// (see Classifier.SeesLocal).
func (s *Service) SeesLocal() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cls.SeesLocal()
}

// SetLocal tells the service its socket's addresses changed; the
// classification starts over.
func (s *Service) SetLocal(local Local) {
	s.mu.Lock()
	s.cls.SetLocal(local)
	s.mu.Unlock()
	s.Kick()
}

// Report is what netcheck shows of STUN.
type Report struct {
	Mapping Mapping        `json:"-"`
	Servers []ServerReport `json:"servers"`
	// ClassifiedAfterSec is the time from the first answer to the first
	// verdict other than Unknown (-1: not yet).
	ClassifiedAfterSec float64 `json:"classified_after_s"`
	SentBytes          int64   `json:"sent_bytes"`
	ReceivedBytes      int64   `json:"received_bytes"`
	Answered           int64   `json:"answered"`
	UpSec              float64 `json:"up_s"`
	// RecentBps is the STUN bytes sent and received per second over the
	// last rateWindow (or since start, if shorter), answers to others
	// included: the steady cost, without the quick rounds at start.
	RecentBps float64 `json:"recent_bytes_per_s"`
}

// Report returns the STUN state.
func (s *Service) Report() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	r := Report{Mapping: s.cls.Result(), ClassifiedAfterSec: -1, SentBytes: s.sent,
		ReceivedBytes: s.received, Answered: s.answered, UpSec: now.Sub(s.started).Seconds()}
	if !s.knownAt.IsZero() {
		r.ClassifiedAfterSec = s.knownAt.Sub(s.firstAt).Seconds()
	}
	if len(s.samples) > 1 {
		first := s.samples[0]
		if span := now.Sub(first.at).Seconds(); span > 0 {
			r.RecentBps = float64(s.sent+s.received-first.bytes) / span
		}
	}
	for a, sr := range s.servers {
		sr.AgoSec = now.Sub(s.heard[a]).Seconds()
		r.Servers = append(r.Servers, sr)
	}
	slices.SortFunc(r.Servers, func(a, b ServerReport) int { return a.Addr.Compare(b.Addr) })
	return r
}

func (s *Service) readLoop() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (or a deadline): keep draining.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b := buf[:n]
		if !stunx.IsSTUN(b) {
			continue // a QUIC punch's random bytes, or anything else
		}
		src, ok := addrPortOf(from)
		if !ok {
			continue
		}
		s.handle(b, src, time.Now())
	}
}

// handle takes one STUN datagram from src.
func (s *Service) handle(b []byte, src netip.AddrPort, now time.Time) {
	if len(b) >= 2 && b[0] == 0x01 && b[1] == 0x01 { // a Binding success response
		tx, mapped, err := stunx.ParseBindingResponse(b)
		if err != nil {
			s.refuse(src, err.Error())
			return
		}
		s.answer(tx, src, mapped, now, len(b))
		return
	}
	if s.cfg.Answer != nil && !s.cfg.Answer() {
		return
	}
	s.mu.Lock()
	s.received += int64(len(b))
	resp, ok, reason := s.resp.Answer(b, src, now)
	if ok {
		s.answered++
		s.sent += int64(len(resp))
	}
	s.mu.Unlock()
	if !ok {
		s.refuse(src, reason)
		return
	}
	_, _ = s.pc.WriteTo(resp, net.UDPAddrFromAddrPort(src))
}

// refuse logs a refusal once per source and reason, for a bounded number
// of sources.
func (s *Service) refuse(src netip.AddrPort, reason string) {
	key := src.Addr().String() + " " + reason
	s.mu.Lock()
	seen := s.refused[key]
	if !seen && len(s.refused) < 1024 {
		s.refused[key] = true
	}
	s.mu.Unlock()
	if !seen {
		s.log.Info("refused a STUN datagram", "from", src, "why", reason)
	}
}

func (s *Service) answer(tx stunx.TxID, src, mapped netip.AddrPort, now time.Time, size int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	req, ok := s.pending[tx]
	if !ok || req.server.Addr().Unmap() != src.Addr().Unmap() {
		return // not ours, late, or from elsewhere: never trusted
	}
	delete(s.pending, tx)
	s.received += int64(size)
	before := s.cls.Result()
	s.cls.Observe(Answer{Server: req.server, Mapped: mapped, At: now})
	after := s.cls.Result()
	s.servers[req.server] = ServerReport{Addr: req.server, Mapped: mapped,
		RTTms: float64(now.Sub(req.sent).Microseconds()) / 1000}
	s.heard[req.server] = now
	if s.firstAt.IsZero() {
		s.firstAt = now
	}
	if after.Kind != Unknown && s.knownAt.IsZero() {
		s.knownAt = now
	}
	if after != before {
		s.log.Info("NAT mapping", "kind", after.Kind, "addr", after.Addr, "port_preserved", after.PortPreserved, "servers", after.Servers)
		if s.cfg.OnChange != nil {
			s.cfg.OnChange() // it must not call back into the service
		}
	}
}

func (s *Service) probeLoop() {
	defer s.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	retry := s.cfg.Retry
	unanswered := 0 // rounds in a row with fewer than two servers
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		s.round(time.Now())
		// ±20% jitter, so that peers do not fall into step.
		next := time.Duration(float64(s.cfg.Refresh) * (0.8 + 0.4*mrand.Float64()))
		if s.Mapping().Servers < 2 {
			// Quick rounds while the mapping is unknown, backing off
			// after the first few (a group with one server stays
			// unknown, and should not pay for asking every second).
			if unanswered++; unanswered > quickRounds {
				retry = min(2*retry, s.cfg.Refresh)
			}
			next = retry
		} else {
			unanswered, retry = 0, s.cfg.Retry
		}
		t.Reset(next)
	}
}

// round sends one Binding request to each of up to MaxServers servers of
// distinct IPs, and drops requests that waited too long.
func (s *Service) round(now time.Time) {
	var targets []netip.AddrPort
	ips := map[netip.Addr]bool{}
	for _, a := range s.cfg.Servers() {
		if !a.IsValid() || ips[a.Addr().Unmap()] {
			continue
		}
		ips[a.Addr().Unmap()] = true
		targets = append(targets, a)
		if len(targets) == MaxServers {
			break
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, sample{at: now, bytes: s.sent + s.received})
	for len(s.samples) > 2 && now.Sub(s.samples[1].at) > rateWindow {
		s.samples = s.samples[1:]
	}
	for tx, r := range s.pending {
		if now.Sub(r.sent) > s.cfg.Timeout {
			delete(s.pending, tx)
		}
	}
	s.mu.Unlock()
	for _, a := range targets {
		tx, err := stunx.NewTxID(rand.Reader)
		if err != nil {
			return
		}
		req := stunx.NewBindingRequest(tx)
		s.mu.Lock()
		s.pending[tx] = request{server: a, sent: time.Now()}
		s.sent += int64(len(req))
		s.mu.Unlock()
		if _, err := s.pc.WriteTo(req, net.UDPAddrFromAddrPort(a)); err != nil {
			s.log.Debug("STUN request not sent", "to", a, "err", err)
		}
	}
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

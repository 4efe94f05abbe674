package nat

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// The relays. A supernode runs circuit relay v2 for the members of its
// group (started and stopped by the election, not by libp2p's own
// reachability guess), and every NATed peer holds reservations on at
// least two supernodes, refreshed before they expire and moved at once
// when a supernode goes, so that anyone can reach it through a circuit.

// RelayLimits are what a supernode's relay allows. Circuits carry real
// traffic (swarm pieces among it), so they have no time or data limit:
// such circuits are not Limited, and streams open on them like on any
// connection.
func RelayLimits() relayv2.Resources {
	rc := relayv2.DefaultResources()
	rc.Limit = nil
	rc.MaxReservations = 1024
	rc.MaxCircuits = 64
	rc.BufferSize = 64 << 10
	// Many members sit behind one NAT (one IP); the group ACL, not the
	// IP, is what keeps strangers out.
	rc.MaxReservationsPerIP = 256
	rc.MaxReservationsPerASN = 1024
	return rc
}

// MemberACL lets reservations and circuits through for members only, and
// logs each refused peer once.
type MemberACL struct {
	IsMember func(peer.ID) bool
	Log      *slog.Logger

	mu     sync.Mutex
	logged map[peer.ID]bool
}

var _ relayv2.ACLFilter = (*MemberACL)(nil)

func (a *MemberACL) refuse(p peer.ID, what string) bool {
	a.mu.Lock()
	if a.logged == nil {
		a.logged = map[peer.ID]bool{}
	}
	first := !a.logged[p] && len(a.logged) < 4096
	if first {
		a.logged[p] = true
	}
	a.mu.Unlock()
	if first && a.Log != nil {
		a.Log.Info("relay refused a non-member", "peer", p, "asked", what)
	}
	return false
}

// AllowReserve implements relayv2.ACLFilter.
func (a *MemberACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool {
	if a.IsMember(p) {
		return true
	}
	return a.refuse(p, "a reservation")
}

// AllowConnect implements relayv2.ACLFilter.
func (a *MemberACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dst peer.ID) bool {
	if a.IsMember(src) && a.IsMember(dst) {
		return true
	}
	if !a.IsMember(src) {
		return a.refuse(src, "a circuit")
	}
	return a.refuse(dst, "a circuit to it")
}

// relayMeter counts what the relay carries, for netcheck and for the
// CPU-per-GiB figure.
type relayMeter struct {
	bytes, circuits, reservations atomic.Int64
}

var _ relayv2.MetricsTracer = (*relayMeter)(nil)

func (m *relayMeter) RelayStatus(bool)                      {}
func (m *relayMeter) ConnectionOpened()                     { m.circuits.Add(1) }
func (m *relayMeter) ConnectionClosed(time.Duration)        {}
func (m *relayMeter) ConnectionRequestHandled(pbv2.Status)  {}
func (m *relayMeter) ReservationAllowed(isRenewal bool)     { m.reservations.Add(1) }
func (m *relayMeter) ReservationClosed(int)                 {}
func (m *relayMeter) ReservationRequestHandled(pbv2.Status) {}
func (m *relayMeter) BytesTransferred(n int)                { m.bytes.Add(int64(n)) }

// RelayStats is what a supernode's relay has carried since start.
type RelayStats struct {
	Bytes        int64 `json:"bytes"`        // relayed, both directions
	Circuits     int64 `json:"circuits"`     // opened
	Reservations int64 `json:"reservations"` // granted or renewed
}

// RelayService is the supernode's relay, on or off.
type RelayService struct {
	h     host.Host
	acl   *MemberACL
	log   *slog.Logger
	meter relayMeter

	mu    sync.Mutex
	relay *relayv2.Relay
}

// NewRelayService prepares the relay for h; SetOn starts and stops it.
func NewRelayService(h host.Host, isMember func(peer.ID) bool, log *slog.Logger) *RelayService {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &RelayService{h: h, acl: &MemberACL{IsMember: isMember, Log: log}, log: log}
}

// SetOn starts (on) or stops the relay.
func (s *RelayService) SetOn(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on == (s.relay != nil) {
		return nil
	}
	if !on {
		err := s.relay.Close()
		s.relay = nil
		s.log.Info("relay service stopped")
		return err
	}
	r, err := relayv2.New(s.h, relayv2.WithResources(RelayLimits()), relayv2.WithACL(s.acl), relayv2.WithMetricsTracer(&s.meter))
	if err != nil {
		return fmt.Errorf("start the relay service: %w", err)
	}
	s.relay = r
	s.log.Info("relay service started")
	return nil
}

// On says whether the relay runs.
func (s *RelayService) On() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relay != nil
}

// Stats is what the relay has carried.
func (s *RelayService) Stats() RelayStats {
	return RelayStats{Bytes: s.meter.bytes.Load(), Circuits: s.meter.circuits.Load(), Reservations: s.meter.reservations.Load()}
}

// Close stops the relay if it runs.
func (s *RelayService) Close() error { return s.SetOn(false) }

// HeldReservation is one reservation, for netcheck.
type HeldReservation struct {
	Supernode peer.ID
	Expires   time.Time
	Addrs     []ma.Multiaddr // circuit addresses through it
}

// Reserver keeps this peer's reservations on supernodes.
type Reserver struct {
	h          host.Host
	want       func() bool    // whether this peer needs relays now
	supernodes func() []Relay // the elected supernodes, self left out
	changed    func()         // the circuit addresses changed
	log        *slog.Logger

	mu      sync.Mutex
	held    map[string]*held
	backoff map[string]time.Time // supernodes not to try again before
	kick    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	notifee *network.NotifyBundle
}

type held struct {
	res       *client.Reservation
	refreshAt time.Time
}

// reserveTimeout bounds one reservation request; retryAfter is how long
// a supernode that refused or failed waits before it is asked again.
const (
	reserveTimeout = 5 * time.Second
	retryAfter     = 3 * time.Second
	reserverTick   = 500 * time.Millisecond
)

// NewReserver starts keeping reservations for h: want says whether it
// needs them, supernodes lists the candidates, changed is called when the
// set of circuit addresses changed.
func NewReserver(h host.Host, want func() bool, supernodes func() []Relay, changed func(), log *slog.Logger) *Reserver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reserver{h: h, want: want, supernodes: supernodes, changed: changed, log: log,
		held: map[string]*held{}, backoff: map[string]time.Time{}, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	// A supernode that disconnects is given up at once, not at the next
	// election: its reservation went with the connection.
	r.notifee = &network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		id := c.RemotePeer().String()
		r.mu.Lock()
		_, ok := r.held[id]
		r.mu.Unlock()
		if ok && h.Network().Connectedness(c.RemotePeer()) != network.Connected {
			r.drop(id, "its connection closed")
			r.Kick()
		}
	}}
	h.Network().Notify(r.notifee)
	// A supernode whose relay restarts (its role dropped and came back)
	// has forgotten our reservation while the connection stayed: when it
	// announces the hop protocol again, reserve again at once.
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerProtocolsUpdated))
	if err == nil {
		r.wg.Add(1)
		go r.watchProtocols(sub)
	}
	r.wg.Add(1)
	go r.loop()
	return r
}

func (r *Reserver) watchProtocols(sub event.Subscription) {
	defer r.wg.Done()
	defer sub.Close()
	for {
		select {
		case <-r.stop:
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			ev := e.(event.EvtPeerProtocolsUpdated)
			if !slices.Contains(ev.Added, proto.ProtoIDv2Hop) {
				continue
			}
			r.mu.Lock()
			if h, ok := r.held[ev.Peer.String()]; ok {
				h.refreshAt = time.Time{}
			}
			r.mu.Unlock()
			r.Kick()
		}
	}
}

// Kick asks for a pass now.
func (r *Reserver) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Close stops keeping reservations (those held expire on their own).
func (r *Reserver) Close() error {
	select {
	case <-r.stop:
		return nil
	default:
		close(r.stop)
	}
	r.h.Network().StopNotify(r.notifee)
	r.wg.Wait()
	return nil
}

func (r *Reserver) drop(id, why string) {
	r.mu.Lock()
	_, ok := r.held[id]
	delete(r.held, id)
	r.backoff[id] = time.Now().Add(retryAfter)
	r.mu.Unlock()
	if ok {
		r.log.Info("relay reservation dropped", "supernode", id, "why", why)
		r.changed()
	}
}

// Held lists the reservations held now.
func (r *Reserver) Held() []HeldReservation {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []HeldReservation
	for id, h := range r.held {
		pid, _ := peer.Decode(id)
		out = append(out, HeldReservation{Supernode: pid, Expires: h.res.Expiration, Addrs: circuitAddrs(h.res)})
	}
	slices.SortFunc(out, func(a, b HeldReservation) int { return a.Expires.Compare(b.Expires) })
	return out
}

// CircuitAddrs are this peer's addresses through its relays.
func (r *Reserver) CircuitAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, h := range r.Held() {
		out = append(out, h.Addrs...)
	}
	return out
}

func circuitAddrs(res *client.Reservation) []ma.Multiaddr {
	circuit := ma.StringCast("/p2p-circuit")
	var out []ma.Multiaddr
	for _, a := range res.Addrs {
		out = append(out, a.Encapsulate(circuit))
	}
	return out
}

func (r *Reserver) loop() {
	defer r.wg.Done()
	t := time.NewTicker(reserverTick)
	defer t.Stop()
	for {
		r.pass(time.Now())
		select {
		case <-r.stop:
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// pass drops reservations no longer wanted and makes or refreshes those
// ChooseRelays names.
func (r *Reserver) pass(now time.Time) {
	if !r.want() {
		r.mu.Lock()
		ids := make([]string, 0, len(r.held))
		for id := range r.held {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		for _, id := range ids {
			r.drop(id, "this peer needs no relay")
		}
		return
	}
	var cands []Relay
	supernodes := r.supernodes() // outside the lock: it may call back
	r.mu.Lock()
	for _, s := range supernodes {
		if until, ok := r.backoff[s.ID]; ok && now.Before(until) {
			continue
		}
		cands = append(cands, s)
	}
	current := make([]string, 0, len(r.held))
	var gone []string
	for id := range r.held {
		// A reservation whose connection closed just as it was made
		// missed the disconnect notice: it went with the connection.
		if pid, err := peer.Decode(id); err == nil && r.h.Network().Connectedness(pid) != network.Connected {
			gone = append(gone, id)
			continue
		}
		current = append(current, id)
	}
	r.mu.Unlock()
	for _, id := range gone {
		r.drop(id, "not connected")
	}
	chosen := ChooseRelays(cands, current, MinReservations)
	for _, id := range current {
		if !slices.Contains(chosen, id) {
			r.drop(id, "no longer a chosen supernode")
		}
	}
	var wg sync.WaitGroup
	for _, id := range chosen {
		r.mu.Lock()
		h, ok := r.held[id]
		due := !ok || !now.Before(h.refreshAt)
		r.mu.Unlock()
		if !due {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.reserve(id, ok)
		}()
	}
	wg.Wait()
}

func (r *Reserver) reserve(id string, refresh bool) {
	pid, err := peer.Decode(id)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), reserveTimeout)
	defer cancel()
	ai := peer.AddrInfo{ID: pid, Addrs: r.h.Peerstore().Addrs(pid)}
	res, err := client.Reserve(ctx, r.h, ai)
	if err != nil {
		r.mu.Lock()
		r.backoff[id] = time.Now().Add(retryAfter)
		r.mu.Unlock()
		if refresh {
			r.drop(id, "refresh failed: "+err.Error())
		} else {
			r.log.Info("relay reservation failed", "supernode", id, "err", err)
		}
		return
	}
	now := time.Now()
	r.mu.Lock()
	_, had := r.held[id]
	r.held[id] = &held{res: res, refreshAt: RefreshAt(res.Expiration, now)}
	r.mu.Unlock()
	if !had {
		r.log.Info("relay reservation made", "supernode", id, "expires", res.Expiration.Sub(now).Round(time.Second))
		r.changed()
	}
}

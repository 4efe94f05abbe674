package nat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
)

const refusedMsg = "relay refused a non-member"

// logBuf is a log sink the relay's handlers write to while the test reads.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
func (l *logBuf) count(sub string) int        { return strings.Count(l.String(), sub) }
func (l *logBuf) logger() *slog.Logger        { return slog.New(slog.NewTextHandler(l, nil)) }

// loopbackOnly lets a host dial loopback and circuit addresses only, so that
// the public address a relay advertises (for its reservations) is never dialed.
type loopbackOnly struct{ p2phost.CutGater }

func (*loopbackOnly) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool {
	return manet.IsIPLoopback(a) || isCircuit(a)
}

func isCircuit(a ma.Multiaddr) bool { _, err := a.ValueForProtocol(ma.P_CIRCUIT); return err == nil }

// newHost starts a TCP host on 127.0.0.1, like p2phost.Loopback's.
func newHost(t *testing.T, extra ...libp2p.Option) host.Host {
	t.Helper()
	opts := append(p2phost.Options(), libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(&network.NullResourceManager{}), libp2p.ConnectionGater(&loopbackOnly{}))
	h, err := libp2p.New(append(opts, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2phost.Close(h, 5*time.Second) })
	return h
}

// publicAddr makes a relay host also advertise a (never dialed) public
// address: the relay only vouches for public addresses in reservations.
func publicAddr(i int) libp2p.Option {
	pub := ma.StringCast(fmt.Sprintf("/ip4/1.2.3.%d/tcp/4001", i))
	return libp2p.AddrsFactory(func(as []ma.Multiaddr) []ma.Multiaddr { return append(as, pub) })
}

func members(hs ...host.Host) func(peer.ID) bool {
	set := map[peer.ID]bool{}
	for _, h := range hs {
		set[h.ID()] = true
	}
	return func(p peer.ID) bool { return set[p] }
}

func reserve(h, relay host.Host) (*client.Reservation, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return client.Reserve(ctx, h, peer.AddrInfo{ID: relay.ID(), Addrs: relay.Network().ListenAddresses()})
}

// denied says whether err is a reservation the relay refused for permission.
func denied(err error) bool {
	var re client.ReservationError
	return errors.As(err, &re) && re.Status == pbv2.Status_PERMISSION_DENIED
}

func startRelay(t *testing.T, h host.Host, isMember func(peer.ID) bool, log *slog.Logger) *RelayService {
	t.Helper()
	svc := NewRelayService(h, isMember, log)
	if err := svc.SetOn(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	return svc
}

func dialCircuit(from host.Host, relay, to peer.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	from.Network().(*swarm.Swarm).Backoff().Clear(to)
	return from.Connect(ctx, peer.AddrInfo{ID: to, Addrs: []ma.Multiaddr{ma.StringCast("/p2p/" + relay.String() + "/p2p-circuit")}})
}

const echoProto = "/test/relay-echo/1"

func TestRelayServesMembersOnly(t *testing.T) {
	R, A, B, S := newHost(t), newHost(t), newHost(t), newHost(t)
	var logs logBuf
	startRelay(t, R, members(A, B), logs.logger())
	for _, h := range []host.Host{A, B} {
		res, err := reserve(h, R)
		if err != nil {
			t.Fatalf("member %s cannot reserve: %v", h.ID(), err)
		}
		if res.LimitDuration != 0 || res.LimitData != 0 || !res.Expiration.After(time.Now()) {
			t.Fatalf("member reservation %+v: want no limits and a future expiry", res)
		}
	}
	for i := range 3 {
		if _, err := reserve(S, R); !denied(err) {
			t.Fatalf("stranger's reservation #%d: got %v, want PERMISSION_DENIED", i, err)
		}
	}
	if err := dialCircuit(S, R.ID(), A.ID()); err == nil {
		t.Fatal("a stranger opened a circuit to a member")
	}
	if S.Network().Connectedness(A.ID()) == network.Connected {
		t.Fatal("the stranger is connected to the member")
	}
	// Four refusals of S, none of members: one line.
	if logs.count(refusedMsg) != 1 || logs.count("peer="+S.ID().String()) != 1 {
		t.Fatalf("want the stranger's refusals logged once, and nothing else refused:\n%s", logs.String())
	}

	B.SetStreamHandler(echoProto, func(s network.Stream) {
		defer s.Close()
		_, _ = io.Copy(s, s)
	})
	if err := dialCircuit(A, R.ID(), B.ID()); err != nil {
		t.Fatalf("member A cannot reach member B through the relay: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := A.NewStream(ctx, B.ID(), echoProto)
	if err != nil {
		t.Fatalf("a stream on the circuit: %v", err)
	}
	defer s.Reset()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	msg := bytes.Repeat([]byte("echo through the relay "), 4096) // ~94 KiB, past one relay buffer
	go func() { _, _ = s.Write(msg); _ = s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo over the circuit: %d of %d bytes back, %v", len(got), len(msg), err)
	}
	// The one connection A has to B is the circuit, and it is not Limited
	// (the stream opened without WithAllowLimitedConn, too).
	if cs := A.Network().ConnsToPeer(B.ID()); len(cs) != 1 || cs[0] != s.Conn() ||
		!isCircuit(s.Conn().RemoteMultiaddr()) || s.Conn().Stat().Limited {
		t.Fatalf("the echo ran on %s (limited %v) of %d conns, want the one unlimited circuit",
			s.Conn().RemoteMultiaddr(), s.Conn().Stat().Limited, len(cs))
	}
}

func TestRelayStopsAndStarts(t *testing.T) {
	R, A, B := newHost(t), newHost(t), newHost(t)
	var logs logBuf
	svc := NewRelayService(R, members(A, B), logs.logger())
	if svc.On() {
		t.Fatal("the relay is on before SetOn")
	}
	if _, err := reserve(A, R); err == nil {
		t.Fatal("reserved on a relay that was never started")
	}
	for range 2 { // a second SetOn(true) is a no-op
		if err := svc.SetOn(true); err != nil || !svc.On() {
			t.Fatalf("SetOn(true): %v, On %v", err, svc.On())
		}
	}
	for _, h := range []host.Host{A, B} {
		if _, err := reserve(h, R); err != nil {
			t.Fatalf("reserve on the started relay: %v", err)
		}
	}
	if err := svc.SetOn(false); err != nil || svc.On() {
		t.Fatalf("SetOn(false): %v, On %v", err, svc.On())
	}
	if _, err := reserve(A, R); err == nil {
		t.Fatal("reserved on a stopped relay")
	}
	if err := svc.SetOn(true); err != nil || !svc.On() {
		t.Fatalf("SetOn(true) again: %v, On %v", err, svc.On())
	}
	if _, err := reserve(A, R); err != nil {
		t.Fatalf("reserve on the restarted relay: %v", err)
	}
	// The restarted relay forgot B's reservation: B must reserve again.
	if err := dialCircuit(A, R.ID(), B.ID()); err == nil {
		t.Fatal("a circuit to B through the restarted relay before B reserved again")
	}
	if _, err := reserve(B, R); err != nil {
		t.Fatal(err)
	}
	if err := dialCircuit(A, R.ID(), B.ID()); err != nil {
		t.Fatalf("a circuit to B after it reserved again: %v", err)
	}
	for range 2 {
		if err := svc.Close(); err != nil || svc.On() {
			t.Fatalf("Close: %v, On %v", err, svc.On())
		}
	}
	if _, err := reserve(B, R); err == nil {
		t.Fatal("reserved on a closed relay")
	}
	if n := logs.count("relay service started"); n != 2 {
		t.Fatalf("started logged %d times, want 2", n)
	}
}

func TestReservationFlood(t *testing.T) {
	cm, err := connmgr.NewConnManager(100, 400)
	if err != nil {
		t.Fatal(err)
	}
	R := newHost(t, libp2p.ConnectionManager(cm))
	A := newHost(t)
	strangers := []host.Host{newHost(t), newHost(t), newHost(t)}
	var logs logBuf
	svc := startRelay(t, R, members(A), logs.logger())

	const attempts = 300
	jobs := make(chan host.Host)
	var wrong atomic.Int32
	var firstWrong atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for h := range jobs {
				if _, err := reserve(h, R); !denied(err) {
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprint(err))
				}
			}
		})
	}
	for i := range attempts {
		jobs <- strangers[i%len(strangers)]
	}
	close(jobs)
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d of %d stranger reservations were not refused with PERMISSION_DENIED; first: %v", n, attempts, firstWrong.Load())
	}
	if !svc.On() {
		t.Fatal("the relay stopped under the flood")
	}
	if n := logs.count(refusedMsg); n != len(strangers) {
		t.Fatalf("%d refusals logged, want one per stranger (%d)", n, len(strangers))
	}
	svc.acl.mu.Lock()
	remembered := len(svc.acl.logged)
	svc.acl.mu.Unlock()
	if remembered != len(strangers) {
		t.Fatalf("the ACL remembers %d peers, want %d", remembered, len(strangers))
	}
	for _, s := range strangers {
		if ti := R.ConnManager().GetTagInfo(s.ID()); ti != nil && ti.Tags["relay-reservation"] != 0 {
			t.Fatalf("the relay holds a reservation for stranger %s", s.ID())
		}
	}
	// Every refused request's stream is gone: the relay holds nothing for them.
	testwait.Until(t, 10*time.Second, func() error {
		n := 0
		for _, c := range R.Network().Conns() {
			for _, s := range c.GetStreams() {
				if s.Protocol() == proto.ProtoIDv2Hop {
					n++
				}
			}
		}
		if n > 0 {
			return fmt.Errorf("%d hop streams still open on the relay", n)
		}
		return nil
	})
	for i := range 5 { // beyond MaxReservationsPerPeer: renewals
		if _, err := reserve(A, R); err != nil {
			t.Fatalf("member reservation #%d after the flood: %v", i, err)
		}
	}
	if ti := R.ConnManager().GetTagInfo(A.ID()); ti == nil || ti.Tags["relay-reservation"] == 0 {
		t.Fatal("the member's reservation is not tagged on the relay")
	}
}

func TestReserverKeepsTwoAndMoves(t *testing.T) {
	C := newHost(t)
	var relays []host.Host
	var cands []Relay
	for i := range 3 {
		r := newHost(t, publicAddr(i+1))
		startRelay(t, r, members(C), slog.New(slog.DiscardHandler))
		C.Peerstore().AddAddrs(r.ID(), r.Network().ListenAddresses(), peerstore.PermanentAddrTTL)
		relays = append(relays, r)
		cands = append(cands, Relay{ID: r.ID().String(), RTT: time.Duration(i+1) * time.Millisecond})
	}
	var want atomic.Bool
	want.Store(true)
	var changes atomic.Int32
	res := NewReserver(C, want.Load, func() []Relay { return slices.Clone(cands) }, func() { changes.Add(1) },
		slog.New(slog.DiscardHandler))
	t.Cleanup(func() { _ = res.Close() })

	// holds checks that the reservations, and the circuit addresses, are
	// through hs exactly.
	holds := func(hs ...host.Host) func() error {
		return func() error {
			var want, held, via []string
			for _, h := range hs {
				want = append(want, h.ID().String())
			}
			for _, h := range res.Held() {
				held = append(held, h.Supernode.String())
			}
			for _, a := range res.CircuitAddrs() {
				r, err := a.ValueForProtocol(ma.P_P2P)
				if !isCircuit(a) || err != nil {
					return testwait.Permanent{Err: fmt.Errorf("circuit address %s: want <relay addr>/p2p/<relay>/p2p-circuit", a)}
				}
				if !slices.Contains(via, r) {
					via = append(via, r)
				}
			}
			slices.Sort(want)
			slices.Sort(held)
			slices.Sort(via)
			if !slices.Equal(held, want) || !slices.Equal(via, want) {
				return fmt.Errorf("holds reservations on %v with circuits through %v, want %v", held, via, want)
			}
			return nil
		}
	}
	changedAgain := func(since int32, n int32) int32 {
		t.Helper()
		if got := changes.Load(); got < since+n {
			t.Fatalf("changed called %d times, want at least %d", got, since+n)
		}
		return changes.Load()
	}

	testwait.Until(t, 10*time.Second, holds(relays[0], relays[1])) // the two lowest RTTs
	seen := changedAgain(0, 2)
	if err := p2phost.Close(relays[0], 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, holds(relays[1], relays[2]))
	seen = changedAgain(seen, 2) // R1 dropped, R3 added
	want.Store(false)
	res.Kick()
	testwait.Until(t, 10*time.Second, holds())
	changedAgain(seen, 2)
}

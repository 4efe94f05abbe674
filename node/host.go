package node

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/fx"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/overlay"
)

// quicFallbackDelay is how long a dial waits for TCP before it also tries
// QUIC. Both are listened on (QUIC for hole punching and STUN later), but on
// a direct path TCP is dialled first: kernel TCP with Noise and yamux cost
// about 40% less CPU than quic-go with TLS when a 50-peer mesh formed on 2
// cores (devnet 50 converged in 7-8 s against 12 s). libp2p's default
// ranking (QUIC first, TCP 30 ms later on private networks) also dialled
// both on a busy machine: two handshakes per pair for nothing.
const quicFallbackDelay = 2500 * time.Millisecond

// tcpFirstRanker is libp2p's default dial ranking with a QUIC address held
// back by quicFallbackDelay whenever a TCP address of the same IP is on
// offer. A QUIC address with no TCP beside it is dialled at once: a peer
// behind an easy NAT is reachable over QUIC at its STUN-mapped address,
// and its TCP address is an inside one that would only time out.
func tcpFirstRanker(addrs []ma.Multiaddr) []network.AddrDelay {
	ranked := swarm.DefaultDialRanker(addrs)
	tcpIPs := map[string]bool{}
	base := time.Duration(-1) // the earliest TCP dial moves to time 0
	for _, r := range ranked {
		if isTCP(r.Addr) {
			tcpIPs[ipOf(r.Addr)] = true
			if base < 0 || r.Delay < base {
				base = r.Delay
			}
		}
	}
	if base < 0 {
		return ranked
	}
	for i, r := range ranked {
		if isTCP(r.Addr) {
			ranked[i].Delay -= base
		} else if _, err := r.Addr.ValueForProtocol(ma.P_QUIC_V1); err == nil && tcpIPs[ipOf(r.Addr)] {
			ranked[i].Delay += quicFallbackDelay
		}
	}
	return ranked
}

// ipOf is the IP component of a, as text ("" for none).
func ipOf(a ma.Multiaddr) string {
	for _, code := range []int{ma.P_IP4, ma.P_IP6} {
		if v, err := a.ValueForProtocol(code); err == nil {
			return v
		}
	}
	return ""
}

func isTCP(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_TCP)
	return err == nil
}

// ErrPortInUse is returned when a listen port is taken.
var ErrPortInUse = errors.New("port in use")

// newHost builds the peer's one libp2p host: TCP and QUIC on one port,
// Noise and TLS, yamux, a resource manager and a connection manager.
// hostHooks are what the host takes from the NAT layer, which starts after
// it: the hole-punch policy and the addresses it adds to the host's own.
type hostHooks struct {
	punch      *nat.Puncher
	extraAddrs func() []ma.Multiaddr // nil until the NAT layer is up
}

func newHost(sk crypto.PrivKey, cfg Config, hooks *hostHooks) (host.Host, *quicreuse.ConnManager, error) {
	asked := make([]ma.Multiaddr, 0, len(cfg.Listen))
	picks := false // some address asks for port 0
	for _, s := range cfg.Listen {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, nil, fmt.Errorf("listen %q: %v", s, err)
		}
		if _, port, ok := bindTargetOf(a); ok && port == 0 {
			picks = true
		}
		asked = append(asked, a)
	}
	// libp2p starts if any one listen address binds, so a port picked
	// free and taken by another process before libp2p bound it (another
	// peer's HTTP face, an outgoing connection) would leave the host
	// without that transport, silently. Each address is checked, and a
	// picked port that lost a race is picked again.
	for attempt := 1; ; attempt++ {
		listen, err := shareFreePort(asked)
		if err != nil {
			return nil, nil, err
		}
		h, qm, err := newHostOn(sk, cfg, hooks, listen)
		if err != nil {
			return nil, nil, err
		}
		missing, ok := unbound(h, listen)
		if ok {
			return h, qm, nil
		}
		_ = h.Close()
		if !picks || attempt == 5 {
			return nil, nil, fmt.Errorf("listen %s: %w (another program took it); pass --port with another number, or --port 0 to pick a free one", missing, ErrPortInUse)
		}
	}
}

// unbound returns the first of listen that h does not listen on.
func unbound(h host.Host, listen []ma.Multiaddr) (ma.Multiaddr, bool) {
	have := h.Network().ListenAddresses()
	for _, a := range listen {
		t, port, ok := bindTargetOf(a)
		if !ok {
			continue
		}
		found := false
		for _, b := range have {
			if u, p, ok := bindTargetOf(b); ok && u.network == t.network && p == port {
				found = true
				break
			}
		}
		if !found {
			return a, false
		}
	}
	return nil, true
}

// newHostOn is newHost on listen, whose ports are set.
func newHostOn(sk crypto.PrivKey, cfg Config, hooks *hostHooks, listen []ma.Multiaddr) (host.Host, *quicreuse.ConnManager, error) {
	// libp2p binds TCP with SO_REUSEPORT (TCP hole punching dials from the
	// listen port), so a second peer on a taken port would start and share
	// the port's connections with the first. A plain bind first fails on
	// any existing listener and turns that into a clear error.
	if a, ok := firstTaken(listen); ok {
		return nil, nil, fmt.Errorf("listen %s: %w (another program or peer listens there); pass --port with another number, or --port 0 to pick a free one", a, ErrPortInUse)
	}
	// libp2p's metrics are off (DisableMetrics below); the resource
	// manager's own trace of every reservation would still cost some 4% of
	// a peer's CPU while it forms its connections.
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(hostLimits(memoryBudget(cfg), fdBudget(cfg))), rcmgr.WithMetricsDisabled())
	if err != nil {
		return nil, nil, fmt.Errorf("resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(cfg.ConnLowWater, cfg.ConnHighWater)
	if err != nil {
		return nil, nil, fmt.Errorf("connection manager: %w", err)
	}
	var qm *quicreuse.ConnManager
	opts := append(p2phost.Options(),
		libp2p.Identity(sk),
		libp2p.ListenAddrs(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		// Noise first on TCP: its handshake costs less CPU than TLS with
		// ECDSA certificates (QUIC always uses TLS).
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirstRanker)),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("peer/"+Version),
		// The QUIC transport's socket manager: STUN shares its socket.
		libp2p.WithFxOption(fx.Populate(&qm)),
		// DCUtR, for the pairs the pair policy lets punch. It needs this
		// peer's public address, which STUN finds: the factory adds it.
		libp2p.EnableHolePunching(holepunch.WithTracer(hooks.punch), holepunch.WithAddrFilter(hooks.punch)),
		libp2p.AddrsFactory(func(addrs []ma.Multiaddr) []ma.Multiaddr {
			if hooks.extraAddrs == nil {
				return addrs
			}
			for _, a := range hooks.extraAddrs() {
				if !slices.ContainsFunc(addrs, a.Equal) {
					addrs = append(addrs, a)
				}
			}
			return addrs
		}),
	)
	h, err := libp2p.New(opts...)
	if err != nil {
		_ = rm.Close()
		if isAddrInUse(err) {
			return nil, nil, fmt.Errorf("listen %s: %w (another program or peer listens there); pass --port with another number, or --port 0 to pick a free one", describeListen(listen), ErrPortInUse)
		}
		return nil, nil, fmt.Errorf("start libp2p host on %s: %w", describeListen(listen), err)
	}
	return h, qm, nil
}

// peerStreamsInbound bounds the inbound streams of one peer, whatever the
// memory budget. Every inbound stream reserves its 256 KiB yamux receive
// window when it opens, and a peer that fills the windows of streams it
// never finishes makes us hold that memory: libp2p's default, scaled to a
// 1 GiB budget, lets one peer open 384 (96 MiB of windows); 256 (64 MiB)
// is still far more than a real peer uses (memberlist, RON, Chord RPCs, a
// few swarms). The stream count, not the peer's memory limit, must be what
// binds: over it one stream is refused, while yamux answers a window it
// cannot reserve by closing the whole connection.
const peerStreamsInbound = 256

// hostLimits is libp2p's default limits scaled to the budgets, with
// peerStreamsInbound, and the system's memory held to the budget itself
// (libp2p's scaling adds its 128 MiB base on top).
func hostLimits(memory int64, fds int) rcmgr.ConcreteLimitConfig {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	limits.PeerBaseLimit.StreamsInbound, limits.PeerLimitIncrease.StreamsInbound = peerStreamsInbound, 0
	scaled := limits.Scale(memory, fds)
	return rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(memory)},
	}.Build(scaled)
}

func describeListen(addrs []ma.Multiaddr) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// memoryBudget is the resource manager's memory: the configured amount, or
// 1/8 of RAM between 128 MiB and 1 GiB (256 MiB where RAM is not known).
func memoryBudget(cfg Config) int64 {
	if cfg.MaxMemoryMiB > 0 {
		return int64(cfg.MaxMemoryMiB) << 20
	}
	budget := int64(256 << 20)
	if ram := totalRAM(); ram > 0 {
		budget = ram / 8
	}
	return min(max(budget, 128<<20), 1<<30)
}

// fdBudget is the number of sockets the host may hold: the configured
// number, or half the process's file limit (at least 128).
func fdBudget(cfg Config) int {
	if cfg.MaxFileDescriptors > 0 {
		return cfg.MaxFileDescriptors
	}
	if n, ok := fileLimit(); ok && n > 0 {
		return max(int(min(n, 1<<20)/2), 128)
	}
	return 512
}

// shareFreePort gives every listen address that asks for port 0 one port
// number that is free for all of them, so TCP and QUIC share a port as they
// do with a fixed one. Addresses with a fixed port are left alone.
func shareFreePort(addrs []ma.Multiaddr) ([]ma.Multiaddr, error) {
	type slot struct {
		i int // index in addrs
		bindTarget
	}
	var slots []slot
	var targets []bindTarget
	for i, a := range addrs {
		if t, port, ok := bindTargetOf(a); ok && port == 0 {
			slots = append(slots, slot{i, t})
			targets = append(targets, t)
		}
	}
	if len(slots) == 0 {
		return addrs, nil
	}
	const tries = 50
	for try := 0; try < tries; try++ {
		// The kernel's pick of a free TCP port is the candidate; allFree
		// then checks it for every address, TCP and UDP alike.
		probe, err := net.Listen("tcp", net.JoinHostPort(slots[0].ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addrs[slots[0].i], err)
		}
		port := probe.Addr().(*net.TCPAddr).Port
		_ = probe.Close()
		if allFree(targets, port) {
			out := append([]ma.Multiaddr(nil), addrs...)
			for _, s := range slots {
				out[s.i] = withPort(addrs[s.i], port)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("found no port free for both TCP and UDP in %d tries", tries)
}

// bindTarget is a socket to try binding: "tcp" or "udp", on an IP.
type bindTarget struct {
	network string
	ip      string
}

// bindTargetOf reads what a listen multiaddr binds, and its port.
func bindTargetOf(a ma.Multiaddr) (bindTarget, int, bool) {
	ip, network, port, ok := overlay.IPPort(a)
	if !ok {
		return bindTarget{}, 0, false
	}
	return bindTarget{network: network, ip: ip.String()}, port, true
}

// allFree reports whether port can be bound on every target at once. It
// binds without SO_REUSEPORT, so any existing listener makes it fail.
func allFree(targets []bindTarget, port int) bool {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	for _, t := range targets {
		addr := net.JoinHostPort(t.ip, strconv.Itoa(port))
		if t.network == "tcp" {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			closers = append(closers, l.Close)
		} else {
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				return false
			}
			closers = append(closers, c.Close)
		}
	}
	return true
}

// firstTaken returns the first listen address whose port is already bound.
func firstTaken(addrs []ma.Multiaddr) (ma.Multiaddr, bool) {
	for _, a := range addrs {
		t, port, ok := bindTargetOf(a)
		if ok && port != 0 && !allFree([]bindTarget{t}, port) {
			return a, true
		}
	}
	return nil, false
}

// withPort returns a with its TCP or UDP port replaced.
func withPort(a ma.Multiaddr, port int) ma.Multiaddr {
	out := make(ma.Multiaddr, 0, len(a))
	replaced := false
	for _, c := range a {
		code := c.Protocol().Code
		if !replaced && (code == ma.P_TCP || code == ma.P_UDP) {
			nc, err := ma.NewComponent(c.Protocol().Name, strconv.Itoa(port))
			if err == nil {
				out = append(out, *nc)
				replaced = true
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// WithListenPort sets the TCP or UDP port of every listen address to port.
// Addresses that do not parse are kept as they are, for Validate to name.
func WithListenPort(listen []string, port int) []string {
	out := make([]string, len(listen))
	for i, s := range listen {
		out[i] = s
		if a, err := ma.NewMultiaddr(s); err == nil {
			out[i] = withPort(a, port).String()
		}
	}
	return out
}

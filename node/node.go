// Package node is the composition root: it reads a peer's home and config,
// builds the libp2p host, wires every layer onto it, runs the control API,
// and starts and stops the daemon.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/stop"
	"github.com/peer-overlay/peer/names"
	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/overlay"
	pswarm "github.com/peer-overlay/peer/swarm"
)

// Node is a running peer.
type Node struct {
	home      string
	cfg       Config
	log       *slog.Logger
	started   time.Time
	bootstrap []peer.AddrInfo

	lock    *homeLock
	host    host.Host
	members *overlay.Membership
	overlay *overlay.Overlay
	router  *overlay.Router
	store   *record.Store
	dht     *dht.DHT
	names   *names.Resolver
	svc     *services
	mail    *mailer
	dist    *distributor
	swarms  *pswarm.Manager
	api     *controlServer
	face    atomic.Pointer[httpFace] // set after the control API starts, read by its handlers
	nat     *natLayer
	natp    atomic.Pointer[natLayer] // n.nat, for callbacks that may run before it is set

	keyPath string     // the cluster key file; "" in an open group
	keyMu   sync.Mutex // one key change at a time

	closers      stop.Stack
	leaveTimeout time.Duration // set once, by the first shutdown
	wg           sync.WaitGroup
	once         sync.Once
}

// Bootstrap timing: first retry after a second, doubling to at most half a
// minute; a peer left alone (its group gone) tries its bootstrap peers again.
const (
	bootstrapMinBackoff = time.Second
	bootstrapMaxBackoff = 30 * time.Second
	bootstrapDialLimit  = 10 * time.Second
	aloneCheckInterval  = 5 * time.Second
)

// Start runs a peer in home (which must hold an identity: see InitHome)
// with cfg. It returns once the host listens and the control API answers;
// joining the bootstrap peers goes on in the background, with retries.
func Start(home string, cfg Config, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var boots []peer.AddrInfo
	for _, s := range cfg.Bootstrap {
		ai, err := ParseBootstrap(s)
		if err != nil {
			return nil, err
		}
		boots = append(boots, ai)
	}
	sk, err := LoadIdentity(home)
	if err != nil {
		return nil, err
	}
	n := &Node{home: home, cfg: cfg, log: log, started: time.Now(), bootstrap: boots}
	var keys [][]byte
	if n.keyPath = cfg.clusterKeyPath(home); n.keyPath != "" {
		var warning string
		if keys, warning, err = LoadClusterKeys(n.keyPath); err != nil {
			return nil, fmt.Errorf("config: cluster_key: %w", err)
		}
		if warning != "" {
			log.Warn(warning)
		}
	}
	ok := false
	defer func() {
		if !ok {
			n.shutdown(0) // undo whatever started
		}
	}()
	// Each layer registers its closer as it starts; shutdown closes them in
	// reverse, so start and stop order cannot drift apart.
	if n.lock, err = lockHome(home); err != nil {
		return nil, err
	}
	n.closers.Push("home lock", func() error { n.lock.release(); return nil })
	public, err := cfg.countAsPublic()
	if err != nil {
		return nil, err
	}
	if len(public) > 0 {
		// Before the host starts: libp2p reads the ranges on every call.
		nat.CountAsPublic(public)
		log.Warn("TEST BED MODE: these ranges count as public addresses", "count_as_public", public)
	}
	var qm *quicreuse.ConnManager
	hooks := &hostHooks{punch: nat.NewPuncher(), extraAddrs: n.mappedAddrs}
	if n.host, qm, err = newHost(sk, cfg, hooks); err != nil {
		return nil, err
	}
	n.closers.Push("libp2p host", n.host.Close)
	// Membership alone runs on the bare host: its packets are how a peer
	// becomes a member.
	n.members, err = overlay.NewMembership(n.host, overlay.MembershipConfig{Profile: cfg.Membership, Log: log,
		Fields: n.natFields, Addrs: n.advertAddrs, Keys: keys})
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		// A closed group: every layer from here on registers its handlers
		// through the gate, which serves members only.
		gate := newMemberGate(n.IsMember, log.With("layer", "cluster"))
		n.closers.Push("member gate", func() error { gate.close(); return nil })
		n.host = &memberHost{Host: n.host, gate: gate}
		log.Info("closed group: only peers with the cluster key may join, and only members are served",
			"keys", len(keys), "primary", overlay.KeyFingerprint(keys[0]), "file", n.keyPath)
	}
	n.closers.PushBudget("membership", func(left time.Duration) error {
		if n.leaveTimeout <= 0 {
			return n.members.Close()
		}
		return n.members.Leave(min(n.leaveTimeout, left))
	})
	n.router = overlay.NewRouter(n.host, n.members, overlay.RouterConfig{Log: log})
	n.closers.Push("RON router", func() error { n.router.Close(); return nil })
	n.overlay = overlay.New(n.host, n.members, n.router)
	// The NAT layer reads the members and routes, so it starts after them;
	// membership and the host read it through natp until then.
	n.nat = n.startNAT(qm, cfg, log, hooks)
	n.natp.Store(n.nat)
	n.closers.Push("NAT layer", n.nat.close)
	n.overlay.AddPathProvider(relayPaths{n})
	n.overlay.ServePing()
	if n.store, err = record.Open(filepath.Join(home, dhtDBFile)); err != nil {
		return nil, err
	}
	n.closers.Push("record store", n.store.Close)
	n.dht = dht.New(n.overlay, sk, n.store, len(boots) > 0, dht.Config{Log: log, ObserveLookup: n.observeLookup})
	n.closers.Push("chord ring", func() error { n.dht.Close(n.leaveTimeout > 0); return nil })
	n.names = n.newResolver()
	n.closers.Push("name resolver", func() error { n.names.Close(); return nil })
	if err := n.startSwarms(); err != nil {
		return nil, err
	}
	n.closers.Push("swarms", n.swarms.Close)
	// A direct connection to a peer that was reached through a relay (a
	// hole punch, or the peer dialing out): long-lived streams move over.
	mover := &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil {
			return
		}
		p := c.RemotePeer()
		time.AfterFunc(200*time.Millisecond, func() { n.swarms.MoveToDirect(p) })
	}, DisconnectedF: func(_ network.Network, c network.Conn) {
		// A direct connection that ends young is worth a line: a hole
		// punch or an upgrade that did not hold.
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil {
			return
		}
		if age := time.Since(c.Stat().Opened); age < youngConn {
			log.Info("a new direct connection closed", "peer", c.RemotePeer(), "addr", c.RemoteMultiaddr(),
				"direction", c.Stat().Direction.String(), "age", age.Round(time.Millisecond).String())
		}
	}}
	n.host.Network().Notify(mover)
	n.closers.Push("stream mover", func() error { n.host.Network().StopNotify(mover); return nil })
	n.startServices()
	if err := n.startMail(sk); err != nil {
		return nil, err
	}
	if err := n.startDistribute(); err != nil {
		return nil, err
	}
	if n.api, err = startControl(home, n, log); err != nil {
		return nil, err
	}
	n.closers.Push("control API", func() error { n.api.close(); return nil })
	face, err := startHTTPFace(n, cfg.HTTP, n.api.token, log)
	if err != nil {
		return nil, err
	}
	n.face.Store(face)
	n.closers.Push("HTTP face", func() error { face.close(); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	n.closers.Push("bootstrap and NAT loops", func() error { cancel(); n.wg.Wait(); return nil })
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.natLoop(ctx)
	}()
	if len(boots) > 0 {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.bootstrapLoop(ctx)
		}()
	}
	ok = true
	log.Info("peer started", "id", n.host.ID(), "addrs", n.host.Addrs(), "home", home)
	return n, nil
}

// youngConn: a direct connection that closes younger than this is logged.
const youngConn = 10 * time.Second

// dhtDBFile is the record database in the home.
const dhtDBFile = "dht.db"

// DHT is the peer's Chord ring.
func (n *Node) DHT() *dht.DHT { return n.dht }

// ID is the peer's ID.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Overlay is how layers reach other peers.
func (n *Node) Overlay() *overlay.Overlay { return n.overlay }

// Addrs lists every dialable address as a multiaddr ending in /p2p/<id>.
func (n *Node) Addrs() []string {
	suffix := "/p2p/" + n.host.ID().String()
	var out []string
	// What the group is told: with a STUN-mapped address and circuits
	// through supernodes when behind a NAT.
	for _, a := range n.advertAddrs() {
		out = append(out, a.String()+suffix)
	}
	return out
}

// StopTimeout bounds Close: whatever a library does, Close returns within
// it (plus a short grace per step), naming in the log each step it had to
// leave running.
const StopTimeout = 8 * time.Second

// Close leaves the group (waiting at most leaveTimeout for the news to
// spread) and stops everything, within StopTimeout. It is safe to call more
// than once. It returns the names of the steps that overran and were left
// running (none on a clean stop).
func (n *Node) Close(leaveTimeout time.Duration) []string {
	return n.shutdown(leaveTimeout)
}

func (n *Node) shutdown(leaveTimeout time.Duration) []string {
	n.once.Do(func() { n.leaveTimeout = leaveTimeout })
	err := n.closers.Close(StopTimeout)
	for _, e := range unjoin(err) {
		n.log.Warn("stopping", "err", e)
	}
	skipped := n.closers.Skipped()
	if len(skipped) > 0 {
		n.log.Warn("stopped with steps left running", "skipped", skipped, "deadline", StopTimeout.String())
	}
	return skipped
}

// unjoin lists the errors an errors.Join holds.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// bootstrapLoop joins through the bootstrap peers, retrying with backoff
// while none answers, and again whenever this peer finds itself alone.
func (n *Node) bootstrapLoop(ctx context.Context) {
	backoff := bootstrapMinBackoff
	for {
		wait := aloneCheckInterval
		if n.members.NumAlive() <= 1 {
			if n.joinOnce(ctx) {
				backoff = bootstrapMinBackoff
			} else {
				wait = backoff
				n.log.Warn("no bootstrap peer answered; retrying", "in", wait.String())
				backoff = min(backoff*2, bootstrapMaxBackoff)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// joinOnce tries every bootstrap peer and reports whether any let us in.
// Each failure is logged with its address and cause.
func (n *Node) joinOnce(ctx context.Context) bool {
	joined := false
	for _, ai := range n.bootstrap {
		if ai.ID == n.host.ID() {
			continue
		}
		// A failed attempt puts the peer in libp2p's dial backoff; clear
		// it so each retry really dials and reports the real cause.
		if sw, ok := n.host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(ai.ID)
		}
		jctx, cancel := context.WithTimeout(ctx, bootstrapDialLimit)
		_, err := n.members.Join(jctx, []peer.AddrInfo{ai})
		cancel()
		if ctx.Err() != nil {
			return joined
		}
		addr := overlay.AddrInfoString(ai)
		if overlay.IsClusterKeyError(err) {
			n.log.Error("join failed: "+clusterKeyReason(err), "addr", addr, "err", flatten(err))
			continue
		}
		if err != nil {
			n.log.Warn("bootstrap failed", "addr", addr, "err", flatten(err), "hint", "is a peer running there, and is the /p2p/ ID its own?")
			continue
		}
		joined = true
		n.log.Info("joined the group", "via", addr, "members", n.members.NumAlive())
		if svc := n.nat.svc; svc != nil {
			svc.Kick() // STUN servers are known now: learn the mapping at once
		}
	}
	return joined
}

// observeLookup hands a ring lookup's time to the metrics, once they run.
func (n *Node) observeLookup(d time.Duration, err error) {
	if f := n.face.Load(); f != nil {
		f.metrics.observeLookup(d, err)
	}
}

// flatten puts a multi-line libp2p dial error on one line for the log.
func flatten(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	return strings.TrimPrefix(s, overlay.ErrNoBootstrapJoined.Error()+": ")
}

// ErrNotRunning is returned by the control client when no daemon answers.
var ErrNotRunning = errors.New("no peer is running")

func notRunning(home string) error {
	return fmt.Errorf("%w with home %s; start one with `peer run --home %s`", ErrNotRunning, home, home)
}

// connectionsByTransport counts open connections by their transport.
func (n *Node) connectionsByTransport() map[string]int {
	out := map[string]int{}
	for _, c := range n.host.Network().Conns() {
		name := "other"
		for _, p := range c.RemoteMultiaddr().Protocols() {
			switch p.Code {
			case ma.P_TCP:
				name = "tcp"
			case ma.P_QUIC_V1:
				name = "quic"
			}
		}
		out[name]++
	}
	return out
}

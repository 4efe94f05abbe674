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
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/dht/record"
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
	swarms  *pswarm.Manager
	api     *controlServer

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
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
	ok := false
	defer func() {
		if !ok {
			n.shutdown(0) // undo whatever started
		}
	}()
	if n.lock, err = lockHome(home); err != nil {
		return nil, err
	}
	if n.host, _, err = newHost(sk, cfg); err != nil {
		return nil, err
	}
	n.members, err = overlay.NewMembership(n.host, overlay.MembershipConfig{Profile: cfg.Membership, Log: log})
	if err != nil {
		return nil, err
	}
	n.router = overlay.NewRouter(n.host, n.members, overlay.RouterConfig{Log: log})
	n.overlay = overlay.New(n.host, n.members, n.router)
	n.overlay.ServePing()
	if n.store, err = record.Open(filepath.Join(home, dhtDBFile)); err != nil {
		return nil, err
	}
	n.dht = dht.New(n.overlay, sk, n.store, len(boots) > 0, dht.Config{Log: log})
	if err := n.startSwarms(); err != nil {
		return nil, err
	}
	if n.api, err = startControl(home, n, log); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
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
	for _, a := range n.host.Addrs() {
		out = append(out, a.String()+suffix)
	}
	return out
}

// Close leaves the group (waiting at most leaveTimeout for the news to
// spread) and stops everything. It is safe to call more than once.
func (n *Node) Close(leaveTimeout time.Duration) {
	n.shutdown(leaveTimeout)
}

func (n *Node) shutdown(leaveTimeout time.Duration) {
	n.once.Do(func() {
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.api != nil {
			n.api.close()
		}
		if n.swarms != nil {
			if err := n.swarms.Close(); err != nil {
				n.log.Warn("saving swarm progress", "err", err)
			}
		}
		if n.dht != nil {
			n.dht.Close(leaveTimeout > 0)
		}
		if n.router != nil {
			n.router.Close()
		}
		if n.store != nil {
			_ = n.store.Close()
		}
		if n.members != nil {
			if leaveTimeout > 0 {
				if err := n.members.Leave(leaveTimeout); err != nil {
					n.log.Warn("leave did not finish", "err", err)
				}
			} else {
				_ = n.members.Close()
			}
		}
		if n.host != nil {
			_ = n.host.Close()
		}
		if n.lock != nil {
			n.lock.release()
		}
	})
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
		if err != nil {
			n.log.Warn("bootstrap failed", "addr", addr, "err", flatten(err), "hint", "is a peer running there, and is the /p2p/ ID its own?")
			continue
		}
		joined = true
		n.log.Info("joined the group", "via", addr, "members", n.members.NumAlive())
	}
	return joined
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

package node

// Services by name: the tunnels this peer exposes and forwards, their
// provider records on the ring, and their file in the home, so that they
// come back after a restart.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/names"
	"github.com/peer-overlay/peer/overlay"
	"github.com/peer-overlay/peer/tunnel"
)

// servicesFile keeps the exposes and forwards in the home.
const servicesFile = "services.json"

// Provider records of exposed services live svcTTL and are renewed every
// svcRenew, so that a provider that stopped falls out of the pool soon
// (forwarders also skip a provider that refuses).
const (
	svcTTL   = 10 * time.Minute
	svcRenew = 4 * time.Minute
)

// svcKey is the ring key of a service's providers.
func svcKey(name string) []byte { return []byte("svc:" + name) }

// savedServices is the file's content.
type savedServices struct {
	Expose  []tunnel.Expose  `json:"expose"`
	Forward []tunnel.Forward `json:"forward"`
}

// services is the node's part of tunnels.
type services struct {
	n    *Node
	log  *slog.Logger
	srv  *tunnel.Server
	path string

	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the announcements
	mu       sync.Mutex
	exposes  map[string]tunnel.Expose
	forwards map[string]*tunnel.Forwarder // by name
}

func (n *Node) startServices() {
	ctx, cancel := context.WithCancel(context.Background())
	s := &services{ctx: ctx, cancel: cancel, n: n, log: n.log.With("layer", "tunnel"), srv: tunnel.NewServer(n.host, n.log),
		path: filepath.Join(n.home, servicesFile), exposes: map[string]tunnel.Expose{}, forwards: map[string]*tunnel.Forwarder{}}
	n.svc = s
	n.closers.Push("tunnels", func() error { s.close(); return nil })
	saved, err := s.load()
	if err != nil {
		s.log.Warn("services file unreadable: starting without its exposes and forwards", "path", s.path, "err", err)
	}
	for _, e := range saved.Expose {
		if err := s.expose(e, false); err != nil {
			s.log.Warn("expose from the services file", "name", e.Name, "err", err)
		}
	}
	for _, f := range saved.Forward {
		if _, err := s.forward(f, false); err != nil {
			s.log.Warn("forward from the services file", "name", f.Name, "listen", f.Listen, "err", err)
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.announceLoop(ctx)
	}()
}

func (s *services) load() (savedServices, error) {
	var v savedServices
	b, err := os.ReadFile(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

// saveLocked writes the exposes and forwards to the home.
func (s *services) saveLocked() error {
	v := savedServices{Expose: []tunnel.Expose{}, Forward: []tunnel.Forward{}}
	for _, e := range s.exposes {
		v.Expose = append(v.Expose, e)
	}
	for _, f := range s.forwards {
		v.Forward = append(v.Forward, f.Forward)
	}
	slices.SortFunc(v.Expose, func(a, b tunnel.Expose) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(v.Forward, func(a, b tunnel.Forward) int { return strings.Compare(a.Name, b.Name) })
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path, append(b, '\n'), 0o600)
}

// expose offers e and announces it; save writes the services file.
func (s *services) expose(e tunnel.Expose, save bool) error {
	if err := s.srv.Expose(e); err != nil {
		return err
	}
	s.mu.Lock()
	s.exposes[e.Name] = e
	var err error
	if save {
		err = s.saveLocked()
	}
	s.mu.Unlock()
	s.announce(e.Name)
	return err
}

func (s *services) unexpose(name string) (bool, error) {
	ok := s.srv.Unexpose(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.exposes, name)
	return ok, s.saveLocked()
}

// announce publishes this peer as a provider of name, in the background,
// retrying soon while it fails (a peer that has not joined the ring yet)
// and for as long as name stays exposed.
func (s *services) announce(name string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
			s.mu.Lock()
			_, exposed := s.exposes[name]
			s.mu.Unlock()
			if !exposed {
				return
			}
			ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
			_, err := s.n.dht.AddProvider(ctx, svcKey(name), svcTTL)
			cancel()
			if err == nil {
				return
			}
			if delay == time.Second {
				s.log.Info("announcing a service failed; retrying", "name", name, "err", err)
			}
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}()
}

func (s *services) announceLoop(ctx context.Context) {
	t := time.NewTicker(svcRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		var list []string
		for name := range s.exposes {
			list = append(list, name)
		}
		s.mu.Unlock()
		for _, name := range list {
			s.announce(name)
		}
	}
}

// forward opens a local port to the providers of f.Name.
func (s *services) forward(f tunnel.Forward, save bool) (*tunnel.Forwarder, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if old := s.forwards[f.Name]; old != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("%q is forwarded already, on %s: unforward it first", f.Name, old.Listen)
	}
	s.mu.Unlock()
	fw, err := tunnel.Start(f, tunnel.Dialer{
		Open: func(ctx context.Context, p peer.ID, proto protocol.ID, class string) (network.Stream, error) {
			c, err := overlay.ParseClass(class)
			if err != nil {
				c = overlay.ClassDefault
			}
			return s.n.overlay.OpenStream(ctx, p, proto, c)
		},
		Providers: func(ctx context.Context, name string) ([]peer.ID, error) {
			return s.n.dht.FindProviders(ctx, svcKey(name))
		},
		Cost: func(p peer.ID, class string) float64 {
			c, err := overlay.ParseClass(class)
			if err != nil {
				c = overlay.ClassDefault
			}
			path := s.n.router.Route(p, c)
			if !path.OK {
				return 0
			}
			if c == overlay.ClassThroughput && path.Tput > 0 {
				return float64(1<<20) / path.Tput
			}
			return path.RTTms
		},
		Alive: s.n.members.IsAlive,
		Log:   s.n.log,
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.forwards[f.Name]; old != nil {
		fw.Close()
		return nil, fmt.Errorf("%q is forwarded already, on %s: unforward it first", f.Name, old.Listen)
	}
	s.forwards[f.Name] = fw
	if save {
		if err := s.saveLocked(); err != nil {
			return fw, err
		}
	}
	return fw, nil
}

func (s *services) unforward(name string) (bool, error) {
	s.mu.Lock()
	fw := s.forwards[name]
	delete(s.forwards, name)
	err := s.saveLocked()
	s.mu.Unlock()
	if fw != nil {
		fw.Close()
	}
	return fw != nil, err
}

// ServicesInfo is what `peer services` shows.
type ServicesInfo struct {
	Expose  []tunnel.ExposeStatus  `json:"expose"`
	Forward []tunnel.ForwardStatus `json:"forward"`
}

func (s *services) list() ServicesInfo {
	out := ServicesInfo{Expose: s.srv.List(), Forward: []tunnel.ForwardStatus{}}
	s.mu.Lock()
	for _, fw := range s.forwards {
		out.Forward = append(out.Forward, fw.Status())
	}
	s.mu.Unlock()
	slices.SortFunc(out.Forward, func(a, b tunnel.ForwardStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (s *services) close() {
	s.cancel()
	s.mu.Lock()
	fws := make([]*tunnel.Forwarder, 0, len(s.forwards))
	for _, fw := range s.forwards {
		fws = append(fws, fw)
	}
	s.mu.Unlock()
	for _, fw := range fws {
		fw.Close()
	}
	s.srv.Close(2 * time.Second)
	s.wg.Wait()
}

// allowList turns --allow entries (peer IDs or names) into peer IDs.
func (n *Node) allowList(ctx context.Context, entries []string) ([]peer.ID, error) {
	var out []peer.ID
	for _, e := range entries {
		if id, err := peer.Decode(e); err == nil {
			out = append(out, id)
			continue
		}
		if err := names.Validate(e); err != nil {
			return nil, fmt.Errorf("--allow %q: neither a peer ID nor a name", e)
		}
		r, err := n.names.Resolve(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("--allow %q: %w", e, err)
		}
		out = append(out, r.Owner)
	}
	return out, nil
}

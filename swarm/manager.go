package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

// OpenFunc opens a swarm stream to a peer. The node passes one that goes
// through overlay.OpenStream with class throughput.
type OpenFunc func(ctx context.Context, p peer.ID) (network.Stream, error)

// Discovery finds the peers of a swarm and announces this one.
type Discovery interface {
	Announce(ctx context.Context, h meta.InfoHash) error
	FindPeers(ctx context.Context, h meta.InfoHash) ([]peer.ID, error)
}

// Config tunes a Manager.
type Config struct {
	// UploadRate and DownloadRate cap all swarms together, in bytes per
	// second; 0 is no cap.
	UploadRate, DownloadRate float64
	// StateDir keeps each swarm's manifest and progress, so that a
	// restarted peer resumes; "" keeps nothing.
	StateDir string
	// DialPeers is how many peers of one swarm it dials itself (default
	// 12). It takes every peer that dials it (within the resource
	// manager's limits), so in a crowd each peer has about twice this.
	// More cost more than they bring: on 2 cores, 64 peers that each
	// dialled 50 spent the first second of a transfer setting up streams,
	// and the extra paths carried duplicate blocks. A swarm of up to
	// DialPeers+1 peers is fully connected whatever the value.
	DialPeers int
	Log       *slog.Logger
	// Discovery may be nil: peers then come only from AddPeers and from
	// other peers.
	Discovery Discovery
}

// Manager runs every swarm of one peer: it owns the stream handler, the
// global rate limits and the uploader that serves blocks.
type Manager struct {
	h    host.Host
	open OpenFunc
	cfg  Config
	log  *slog.Logger
	up   *limiter
	down *limiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	swarms map[meta.InfoHash]*Swarm
	wake   chan struct{} // the uploader has work
	bufs   *bufPool      // piece buffers, all swarms

	reqSeq  atomic.Uint64 // orders requests across swarms, oldest first
	upBytes int64         // uploaded piece bytes, all swarms (under mu)
	upSpare spareMeter    // of the global upload cap (under mu)
}

// NewManager starts serving swarm streams on h.
func NewManager(h host.Host, open OpenFunc, cfg Config) *Manager {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.DialPeers <= 0 {
		cfg.DialPeers = 12
	}
	if open == nil {
		open = func(ctx context.Context, p peer.ID) (network.Stream, error) {
			return h.NewStream(ctx, p, wire.Protocol)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		h: h, open: open, cfg: cfg, log: cfg.Log.With("layer", "swarm"),
		up: newLimiter(cfg.UploadRate), down: newLimiter(cfg.DownloadRate),
		ctx: ctx, cancel: cancel,
		swarms: make(map[meta.InfoHash]*Swarm),
		wake:   make(chan struct{}, 1),
		bufs:   newBufPool(bufPoolBytes),
	}
	m.upSpare.read(time.Now(), 0, cfg.UploadRate)
	h.SetStreamHandler(wire.Protocol, m.handleStream)
	m.wg.Add(1)
	go m.uploader()
	return m
}

// Close stops every swarm, saving its progress.
func (m *Manager) Close() error {
	m.h.RemoveStreamHandler(wire.Protocol)
	m.mu.Lock()
	swarms := make([]*Swarm, 0, len(m.swarms))
	for _, s := range m.swarms {
		swarms = append(swarms, s)
	}
	m.mu.Unlock()
	var first error
	for _, s := range swarms {
		if err := s.stop(); err != nil && first == nil {
			first = err
		}
	}
	m.cancel()
	m.wg.Wait()
	return first
}

// ShareOptions tune Share and Seed.
type ShareOptions struct {
	PieceLength int64
	// UploadRate caps this swarm alone (bytes/s, 0 = no cap of its own).
	UploadRate, DownloadRate float64
	// Progress sees hashing progress.
	Progress func(done, total int64)
	// NoSuperSeed turns off super-seeding: the initial seeder then
	// announces every piece at once.
	NoSuperSeed bool
	// EgressCopies, with super-seeding, bounds what the seed uploads, in
	// copies of the content (0 = no bound; below 1 counts as 1): once
	// every piece is out in the swarm and it has offered that much, it
	// offers no more pieces, and the leechers trade the rest among
	// themselves. See offerLocked and LiftEgressBudget.
	EgressCopies float64
}

// Share hashes the file or directory at path and seeds it from where it is.
func (m *Manager) Share(path string, o ShareOptions) (*Swarm, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	info, err := meta.Build(abs, o.PieceLength, o.Progress)
	if err != nil {
		return nil, err
	}
	return m.Seed(info, abs, o)
}

// Seed seeds data that is already complete under root, described by info.
func (m *Manager) Seed(info *meta.Info, root string, o ShareOptions) (*Swarm, error) {
	raw, err := info.Encode()
	if err != nil {
		return nil, err
	}
	h := info.Hash()
	m.mu.Lock()
	if s, ok := m.swarms[h]; ok {
		m.mu.Unlock()
		if s.Status().Complete {
			return s, nil
		}
		return nil, fmt.Errorf("swarm %s is already downloading", h)
	}
	m.mu.Unlock()
	st, err := OpenStorage(info, root, false)
	if err != nil {
		return nil, err
	}
	s := m.newSwarm(h, o)
	s.final = root
	s.setInfo(info, raw, st, true)
	s.superSeed = !o.NoSuperSeed
	if o.EgressCopies > 0 && s.superSeed {
		s.egressBudget = int64(max(o.EgressCopies, 1) * float64(info.TotalLength()))
	}
	if err := m.add(s); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// GetOptions tune Get.
type GetOptions struct {
	// Info, when known (from a .torrent), saves asking peers for it.
	Info *meta.Info
	// Name to show while the manifest is unknown (from a magnet link).
	Name                     string
	UploadRate, DownloadRate float64
}

// Get starts downloading the swarm h into dir. The data is written under
// dir/NAME.part and renamed to dir/NAME once every piece has verified; a
// dir/NAME that exists already is refused.
func (m *Manager) Get(h meta.InfoHash, dir string, o GetOptions) (*Swarm, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	m.mu.Lock()
	if s, ok := m.swarms[h]; ok {
		m.mu.Unlock()
		return s, nil
	}
	m.mu.Unlock()
	s := m.newSwarm(h, ShareOptions{UploadRate: o.UploadRate, DownloadRate: o.DownloadRate})
	s.outDir = abs
	s.name = o.Name
	if o.Info != nil {
		if o.Info.Hash() != h {
			return nil, fmt.Errorf("the manifest's infohash is %s, not %s", o.Info.Hash(), h)
		}
		raw, err := o.Info.Encode()
		if err != nil {
			return nil, err
		}
		if err := s.prepare(o.Info, raw, nil); err != nil {
			return nil, err
		}
	}
	if err := m.add(s); err != nil {
		s.closeStorage()
		return nil, err
	}
	return s, nil
}

// Swarm returns the swarm h, or nil.
func (m *Manager) Swarm(h meta.InfoHash) *Swarm {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.swarms[h]
}

// Swarms lists the status of every swarm, by name.
func (m *Manager) Swarms() []Status {
	m.mu.Lock()
	list := make([]*Swarm, 0, len(m.swarms))
	for _, s := range m.swarms {
		list = append(list, s)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(list))
	for _, s := range list {
		out = append(out, s.Status())
	}
	slices.SortFunc(out, func(a, b Status) int {
		if a.Name != b.Name {
			if a.Name < b.Name {
				return -1
			}
			return 1
		}
		if a.InfoHash < b.InfoHash {
			return -1
		}
		return 1
	})
	return out
}

// Remove stops a swarm and forgets it (its files stay).
func (m *Manager) Remove(h meta.InfoHash) error {
	m.mu.Lock()
	s := m.swarms[h]
	delete(m.swarms, h)
	m.mu.Unlock()
	if s == nil {
		return fmt.Errorf("no swarm %s", h)
	}
	err := s.stop()
	if m.cfg.StateDir != "" {
		os.RemoveAll(filepath.Join(m.cfg.StateDir, h.String()))
	}
	return err
}

func (m *Manager) add(s *Swarm) error {
	m.mu.Lock()
	if _, ok := m.swarms[s.hash]; ok {
		m.mu.Unlock()
		return fmt.Errorf("swarm %s exists", s.hash)
	}
	m.swarms[s.hash] = s
	m.mu.Unlock()
	if err := s.save(); err != nil {
		m.mu.Lock()
		delete(m.swarms, s.hash)
		m.mu.Unlock()
		return err
	}
	s.start()
	return nil
}

// handleStream takes an incoming swarm connection: the handshake names the
// swarm; an unknown one is refused.
func (m *Manager) handleStream(st network.Stream) {
	_ = st.SetReadDeadline(time.Now().Add(handshakeTimeout))
	h, err := wire.ReadHandshake(st)
	if err != nil {
		st.Reset()
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	m.mu.Lock()
	s := m.swarms[meta.InfoHash(h)]
	m.mu.Unlock()
	if s == nil {
		st.Reset()
		return
	}
	if err := wire.WriteHandshake(st, h); err != nil {
		st.Reset()
		return
	}
	s.attach(st, false)
}

// notify wakes the uploader.
func (m *Manager) notify() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

const (
	handshakeTimeout = 10 * time.Second
	bufPoolBytes     = 64 << 20 // idle piece buffers kept for reuse
)

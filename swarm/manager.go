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
	"golang.org/x/time/rate"

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
	// MaxPeers bounds the connections of one swarm (default 50).
	MaxPeers int
	Log      *slog.Logger
	// Discovery may be nil: peers then come only from AddPeers and from
	// other peers.
	Discovery Discovery
	// Now is the clock (default time.Now); tests may slow it.
	Now func() time.Time
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
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
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
	m.upSpare.read(cfg.Now(), 0, cfg.UploadRate)
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
	if err := s.setInfo(info, raw, st, true); err != nil {
		st.Close()
		return nil, err
	}
	s.superSeed = !o.NoSuperSeed
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

// globalSpare is the fraction of the global upload cap left unused over
// the last second or more, read afresh at most once a second so that every
// swarm sees the same figure; ok is false when there is no global cap.
func (m *Manager) globalSpare(now time.Time) (spare float64, ok bool) {
	if m.cfg.UploadRate <= 0 {
		return 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.upSpare.read(now, m.upBytes, m.cfg.UploadRate)
	return m.upSpare.spare, true
}

// spareMeter follows how much of an upload cap went unused.
type spareMeter struct {
	spare float64   // the last reading
	bytes int64     // the byte count at the last reading
	at    time.Time // when it was taken (zero: never)
}

// read takes a new reading from the byte count total when the last one is
// a second old or more; sooner, it keeps the last, as a fraction measured
// over a shorter time says little.
func (s *spareMeter) read(now time.Time, total int64, capBps float64) {
	if s.at.IsZero() {
		s.spare, s.bytes, s.at = 1, total, now // nothing sent yet
		return
	}
	dt := now.Sub(s.at).Seconds()
	if dt < 1 {
		return
	}
	used := float64(total-s.bytes) / (capBps * dt)
	s.spare, s.bytes, s.at = max(0, 1-used), total, now
}

// limiter wraps a token bucket; nil means no cap.
type limiter struct{ l *rate.Limiter }

func newLimiter(bps float64) *limiter {
	if bps <= 0 {
		return nil
	}
	// A burst of a few blocks keeps the cap smooth at the scale of a
	// piece while letting a block go out whole.
	burst := max(4*wire.BlockSize, int(bps/20))
	return &limiter{rate.NewLimiter(rate.Limit(bps), burst)}
}

func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.l.Burst())
		if err := l.l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

const (
	handshakeTimeout = 10 * time.Second
	bufPoolBytes     = 64 << 20 // idle piece buffers kept for reuse
)

// job is a run of blocks of one piece to upload to one peer.
type job struct {
	s    *Swarm
	c    *conn
	st   *Storage
	req  request   // the request chosen
	reqs []request // it and the requests taken with it
}

// maxRun bounds how many blocks of one piece go to one peer in a run. A
// run is handed to the connection's writer at once, so that it reaches the
// stream as a few large writes instead of one small write per block.
const maxRun = 16

// uploader serves blocks, one at a time, under the rate limits. It prefers
// the next block of the piece it last sent to the same peer, so that a
// piece reaches its peer whole and soon and can be passed on; otherwise the
// oldest request of any unchoked peer goes first.
func (m *Manager) uploader() {
	defer m.wg.Done()
	var last *conn
	var lastPiece uint32
	for {
		j := m.nextJob(last, lastPiece)
		if j == nil {
			select {
			case <-m.ctx.Done():
				return
			case <-m.wake:
			}
			continue
		}
		n := 0
		for _, r := range j.reqs {
			n += int(r.Length)
		}
		if m.up.wait(m.ctx, n) != nil || j.s.up.wait(m.ctx, n) != nil {
			return
		}
		out := make([]*wire.Message, len(j.reqs))
		pins := make([]*cachedPiece, len(j.reqs))
		for i, r := range j.reqs {
			buf, e, err := j.s.block(j.st, int(r.Index), int(r.Begin), int(r.Length))
			if err != nil {
				j.s.log.Warn("read a block to serve", "piece", r.Index, "err", err)
				out[i] = &wire.Message{ID: wire.Reject, Index: r.Index, Begin: r.Begin, Length: r.Length}
				continue
			}
			out[i] = &wire.Message{ID: wire.Piece, Index: r.Index, Begin: r.Begin, Block: buf}
			pins[i] = e
		}
		j.s.mu.Lock()
		for i, msg := range out {
			if msg.ID == wire.Reject {
				j.c.queued--
			}
			if pins[i] != nil && !j.c.closed {
				j.c.pins[msg] = pins[i]
				pins[i] = nil
			}
			j.c.send(msg)
		}
		j.s.mu.Unlock()
		for _, e := range pins {
			// Not handed to a live connection: unpin at once.
			j.s.release(e)
		}
		last, lastPiece = j.c, j.req.Index
	}
}

func (m *Manager) nextJob(last *conn, lastPiece uint32) *job {
	m.mu.Lock()
	swarms := make([]*Swarm, 0, len(m.swarms))
	for _, s := range m.swarms {
		swarms = append(swarms, s)
	}
	m.mu.Unlock()
	var best *job
	found := false
	for _, s := range swarms {
		s.mu.Lock()
		for _, c := range s.conns {
			if c.closed || c.amChoking || len(c.reqs) == 0 || c.queued >= maxQueuedBlocks {
				continue
			}
			if c == last {
				for _, r := range c.reqs {
					if r.Index == lastPiece {
						best, found = &job{s: s, c: c, st: s.store, req: r}, true
						break
					}
				}
				if found {
					break
				}
			}
			// Otherwise the peer furthest behind goes next (fewest
			// pieces), then the one we have sent least: every peer gets
			// whole pieces in turn, has something to pass on early, and
			// none falls behind to finish last.
			if best == nil || behind(c, best.c) {
				best = &job{s: s, c: c, st: s.store, req: c.reqs[0]}
			}
		}
		s.mu.Unlock()
		if found {
			break
		}
	}
	if best == nil {
		return nil
	}
	best.s.mu.Lock()
	defer best.s.mu.Unlock()
	c := best.c
	// The request may have been cancelled meanwhile: take it only if it
	// is still queued.
	at := -1
	for i, r := range c.reqs {
		if r.seq == best.req.seq && !c.closed {
			at = i
			break
		}
	}
	if at < 0 {
		return nil
	}
	// Uncapped, take the peer's other requests for the same piece with it,
	// as many as its send queue allows. Under a cap, blocks go one at a
	// time, each as soon as its tokens are there: a run would hold its
	// first block back until the whole run's tokens were.
	limit := 1
	if m.up == nil && best.s.up == nil {
		limit = min(maxRun, maxQueuedBlocks-c.queued)
	}
	best.reqs = append(best.reqs, c.reqs[at])
	kept := c.reqs[:at] // filtered in place: what is kept never overtakes what is read
	for _, r := range c.reqs[at+1:] {
		if len(best.reqs) < limit && r.Index == best.req.Index {
			best.reqs = append(best.reqs, r)
			continue
		}
		kept = append(kept, r)
	}
	clear(c.reqs[len(kept):])
	c.reqs = kept
	c.queued += len(best.reqs)
	return best
}

// behind orders candidates for the uploader (their swarm's lock held).
func behind(a, b *conn) bool {
	if a.s == b.s {
		if na, nb := a.pieces(), b.pieces(); na != nb {
			return na < nb
		}
	}
	if a.sentTotal != b.sentTotal {
		return a.sentTotal < b.sentTotal
	}
	return a.reqs[0].seq < b.reqs[0].seq
}

// block reads a block to serve through a small cache of whole pieces: one
// read per piece instead of one per block, as peers ask for whole pieces.
// The block stays pinned in the cache until release: a piece's buffer goes
// back to the pool only once it has left the cache and every block of it
// has been written out.
func (s *Swarm) block(st *Storage, piece, begin, n int) ([]byte, *cachedPiece, error) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	for _, e := range s.cache {
		if e.piece == piece && e.st == st {
			if begin+n > len(e.data) {
				return nil, nil, fmt.Errorf("block %d+%d outside piece %d", begin, n, piece)
			}
			e.refs++
			return e.data[begin : begin+n : begin+n], e, nil
		}
	}
	data := s.m.bufs.get(int(s.info.PieceSize(piece)))
	if err := st.ReadBlock(piece, 0, data); err != nil {
		s.m.bufs.put(data)
		return nil, nil, err
	}
	if keep := max(1, pieceCacheBytes/len(data)); len(s.cache) >= keep {
		drop := len(s.cache) - keep + 1
		for _, e := range s.cache[:drop] {
			e.evicted = true
			if e.refs == 0 {
				s.m.bufs.put(e.data)
			}
		}
		s.cache = append(s.cache[:0], s.cache[drop:]...)
	}
	if begin+n > len(data) {
		s.m.bufs.put(data)
		return nil, nil, fmt.Errorf("block %d+%d outside piece %d", begin, n, piece)
	}
	e := &cachedPiece{st: st, piece: piece, data: data, refs: 1}
	s.cache = append(s.cache, e)
	return data[begin : begin+n : begin+n], e, nil
}

// release unpins a block that block returned.
func (s *Swarm) release(e *cachedPiece) {
	if e == nil {
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		s.m.bufs.put(e.data)
	}
}

type cachedPiece struct {
	st      *Storage
	piece   int
	data    []byte
	refs    int  // blocks of it handed out and not yet written
	evicted bool // out of the cache: back to the pool at refs 0
}

// pieceCacheBytes bounds the pieces each swarm keeps for serving.
const pieceCacheBytes = 8 << 20

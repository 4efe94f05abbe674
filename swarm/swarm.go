package swarm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/choker"
	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/picker"
	"github.com/peer-overlay/peer/swarm/wire"
)

// Swarm is one file or directory being shared or fetched.
type Swarm struct {
	m    *Manager
	hash meta.InfoHash
	log  *slog.Logger
	up   *limiter
	down *limiter

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed once complete, or failed
	wg     sync.WaitGroup

	announceFailed atomic.Bool // the last announce failed: retry soon

	mu        sync.Mutex
	name      string
	info      *meta.Info
	infoRaw   []byte
	store     *Storage
	outDir    string // where a download goes; "" when shared from its place
	final     string // the data's final path
	pick      *picker.Picker
	chok      *choker.Choker
	rng       *rand.Rand
	have      wire.Bits
	nhave     int
	complete  bool
	failed    error
	superSeed bool
	inSwarm   []bool // super-seeding: pieces some leecher has
	offers    []int  // super-seeding: how often each piece was offered
	// egressBudget: see ShareOptions; everyOut, that every piece is out.
	egressBudget int64
	everyOut     bool
	offeredBytes int64 // the pieces offered, in bytes
	connsChanged bool  // a connection came or went since recheckOutLocked
	conns        map[peer.ID]*conn
	dialing      map[peer.ID]bool
	deferred     map[peer.ID]bool // dials waiting for the other side to dial first
	known        map[peer.ID]bool
	starved      bool // some missing piece is at none of the peers at hand; see tick
	banned       map[peer.ID]string
	suspects     map[int][]suspectBlock  // blocks of pieces that failed, by piece
	partial      map[int][]byte          // blocks of pieces under way, by piece
	pexNew       []peer.ID               // peers connected since the last PEX batch
	from         map[int]map[int]peer.ID // who sent each block of them
	cacheMu      sync.Mutex
	cache        []*cachedPiece // pieces read lately to serve, oldest first
	metaBuf      []byte         // the manifest being fetched from peers
	metaGot      []bool
	metaFrom     peer.ID
	started      time.Time
	finished     time.Time
	downBytes    int64
	upBytes      int64
	downRate     float64
	upRate       float64
	lastDown     int64
	lastUp       int64
	dirty        bool
	spare        float64       // of the upload cap that binds this swarm, see spareLocked
	upSpare      spareMeter    // of this swarm's own upload cap
	redundant    int64         // block bytes that arrived but were not needed
	spread       int           // pipeline bound, see spreadLocked
	caution      float64       // scales the waits before requests move, see staleLocked
	haveSig      chan struct{} // closed when a piece or the manifest arrives; see reader.go
}

func (m *Manager) newSwarm(h meta.InfoHash, o ShareOptions) *Swarm {
	ctx, cancel := context.WithCancel(m.ctx)
	seed := uint64(time.Now().UnixNano())
	s := &Swarm{
		m: m, hash: h, log: m.log.With("swarm", h.String()[:8]),
		up: newLimiter(o.UploadRate), down: newLimiter(o.DownloadRate),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		rng:      rand.New(rand.NewPCG(seed, uint64(len(h))^seed>>7)),
		conns:    make(map[peer.ID]*conn),
		partial:  make(map[int][]byte),
		from:     make(map[int]map[int]peer.ID),
		dialing:  make(map[peer.ID]bool),
		deferred: make(map[peer.ID]bool),
		known:    make(map[peer.ID]bool),
		banned:   make(map[peer.ID]string),
		suspects: make(map[int][]suspectBlock),
		started:  time.Now(),
		caution:  1,
	}
	s.spare = s.spareLocked(s.started)
	s.chok = choker.New(choker.Config{Rand: rand.New(rand.NewPCG(seed+1, seed+2))})
	return s
}

// Hash is the swarm's infohash.
func (s *Swarm) Hash() meta.InfoHash { return s.hash }

// Done is closed once every piece has verified (or the swarm failed: see
// Err).
func (s *Swarm) Done() <-chan struct{} { return s.done }

// Err is why the swarm failed, nil if it did not.
func (s *Swarm) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Finished is when the last piece verified (when the swarm began, for a
// seed); zero while it is incomplete.
func (s *Swarm) Finished() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.complete {
		return time.Time{}
	}
	return s.finished
}

// Info is the manifest, nil while it is still being fetched.
func (s *Swarm) Info() *meta.Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// Path is where the data is (its final name once complete).
func (s *Swarm) Path() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.final
}

// setInfo installs the manifest and storage; seeding marks every piece had.
func (s *Swarm) setInfo(info *meta.Info, raw []byte, st *Storage, seeding bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.info, s.infoRaw, s.store = info, raw, st
	s.name = info.Name
	n := info.NumPieces()
	s.have = wire.NewBits(n)
	s.inSwarm = make([]bool, n)
	s.offers = make([]int, n)
	s.pick = picker.New(picker.Config{
		NumPieces: n, PieceLength: info.PieceLength, TotalLength: info.TotalLength(),
		BlockSize: wire.BlockSize, Rand: rand.New(rand.NewPCG(s.rng.Uint64(), s.rng.Uint64())),
		Stale: s.staleLocked, MaxOwners: 2,
	})
	s.spread = maxPipeline
	s.signalLocked()
	if seeding {
		for i := range n {
			s.have.Set(i)
			s.pick.SetHave(i)
		}
		s.nhave = n
		s.complete = true
		s.finished = time.Now()
		close(s.done)
	}
}

// prepare sets up a download of info into outDir: the data goes to
// NAME.part until complete. have, when not nil, lists pieces a previous
// run verified; each is checked again before it counts.
func (s *Swarm) prepare(info *meta.Info, raw []byte, have []byte) error {
	final := filepath.Join(s.outDir, info.Name)
	part := final + ".part"
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%s exists: remove it or choose another directory with -o", final)
	}
	st, err := OpenStorage(info, part, true)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", part, err)
	}
	s.setInfo(info, raw, st, false)
	s.mu.Lock()
	s.final = final
	s.mu.Unlock()
	resumed := 0
	for i := range info.NumPieces() {
		if !wire.Bits(have).Has(i) {
			continue
		}
		if ok, err := st.Verify(i); err == nil && ok {
			s.mu.Lock()
			s.markHave(i)
			s.mu.Unlock()
			resumed++
		}
	}
	if resumed > 0 {
		s.log.Info("resumed", "pieces", resumed, "of", info.NumPieces())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nhave == info.NumPieces() {
		return s.finishLocked()
	}
	return nil
}

func (s *Swarm) markHave(i int) {
	if s.have.Has(i) {
		return
	}
	s.have.Set(i)
	s.pick.SetHave(i)
	s.nhave++
	s.dirty = true
	s.signalLocked()
}

func (s *Swarm) closeStorage() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store != nil {
		s.store.Close()
	}
}

// start runs the swarm's background work: discovery and the periodic tick.
func (s *Swarm) start() {
	s.wg.Add(1)
	go s.loop()
}

// stop closes every connection and saves progress.
func (s *Swarm) stop() error {
	s.cancel()
	s.mu.Lock()
	for _, c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	err := s.save()
	s.mu.Lock()
	if s.store != nil {
		if e := s.store.Sync(); e != nil && err == nil {
			err = e
		}
		s.store.Close()
	}
	s.mu.Unlock()
	return err
}

// loop discovers peers, runs choke rounds, times requests out and saves
// progress.
func (s *Swarm) loop() {
	defer s.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	fast := time.NewTicker(stealCheck)
	defer fast.Stop()
	var nextAnnounce, nextFind time.Time
	for {
		now := time.Now()
		if d := s.m.cfg.Discovery; d != nil {
			if s.announceFailed.Swap(false) {
				nextAnnounce = now.Add(announceRetry)
			}
			if now.After(nextAnnounce) && s.Info() != nil {
				nextAnnounce = now.Add(announceInterval)
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					if err := d.Announce(s.ctx, s.hash); err != nil && s.ctx.Err() == nil {
						s.log.Debug("announce", "err", err)
						s.announceFailed.Store(true)
					}
				}()
			}
			s.mu.Lock()
			need := !s.complete && (len(s.conns) < s.m.cfg.DialPeers/2 || s.starved)
			s.mu.Unlock()
			if need && now.After(nextFind) {
				nextFind = now.Add(findInterval)
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					ids, err := d.FindPeers(s.ctx, s.hash)
					if err != nil {
						s.log.Debug("find peers", "err", err)
						return
					}
					s.AddPeers(ids...)
				}()
			}
		}
		s.tick(now)
	wait:
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-tick.C:
				break wait
			case <-fast.C:
				s.offerStale()
			}
		}
	}
}

// tick is the once-a-second housekeeping.
func (s *Swarm) tick(now time.Time) {
	s.mu.Lock()
	// Rates, smoothed over a few seconds.
	const a = 0.5
	s.downRate = a*float64(s.downBytes-s.lastDown) + (1-a)*s.downRate
	s.upRate = a*float64(s.upBytes-s.lastUp) + (1-a)*s.upRate
	s.lastDown, s.lastUp = s.downBytes, s.upBytes
	s.relaxLocked(time.Second)
	s.recheckOutLocked()
	if s.superSeed && s.egressBudget > 0 {
		for _, c := range s.conns {
			if c.amChoking && !c.closed {
				// Choked from the start, or shown pieces since: what is
				// on offer to it goes to peers that can ask for it now.
				s.releaseOffersLocked(c)
			}
		}
	}
	for _, c := range s.conns {
		c.downRate = a*float64(c.recv) + (1-a)*c.downRate
		c.upRate = a*float64(c.sent) + (1-a)*c.upRate
		c.recv, c.sent = 0, 0
		c.depth = min(c.depth, max(minPipeline, 2*c.downRate*requestSeconds/wire.BlockSize))
		// Requests unanswered for long go back to the pool; a peer that
		// sends nothing at all while owing us blocks is dropped.
		for b, at := range c.asked {
			if now.Sub(at) > requestTimeout {
				delete(c.asked, b)
				if s.pick != nil {
					s.pick.Rejected(string(c.p), b)
				}
			}
		}
		if len(c.asked) > 0 && now.Sub(c.lastBlock) > stallTimeout && now.Sub(c.connected) > stallTimeout {
			s.log.Info("dropping a peer that stopped sending", "peer", c.p)
			c.close()
		}
		if now.Sub(c.lastSent) > keepAliveInterval {
			c.send(&wire.Message{KeepAlive: true})
		}
	}
	s.spare = s.spareLocked(now)
	// The choker itself ranks peers afresh every 10 s; in between it only
	// follows the spare upload capacity and fills freed slots.
	s.rechokeLocked(now)
	// A download whose peers at hand lack some piece it needs looks for
	// more peers, however many it has: a seed waits to be dialled, so a
	// seed that restarts while the leechers each hold DialPeers/2 others
	// would otherwise never be dialled again, and the leechers would stop
	// at the pieces they hold between them.
	s.starved = !s.complete && s.pick != nil && s.pick.Unavailable() > 0
	// Reconnect to known peers while short of them, or starved.
	if !s.complete && (len(s.conns) < 4 || s.starved) {
		for id := range s.known {
			s.learnLocked(id)
		}
	}
	for _, c := range s.conns {
		s.fillLocked(c)
	}
	save := s.dirty
	s.mu.Unlock()
	if save {
		if err := s.save(); err != nil {
			s.log.Warn("saving progress", "err", err)
		}
	}
}

// Status is what `peer swarms` shows of a swarm.
type Status struct {
	InfoHash    string  `json:"infohash"`
	Name        string  `json:"name"`
	Magnet      string  `json:"magnet"`
	Path        string  `json:"path,omitempty"`
	Size        int64   `json:"size_bytes"`
	Pieces      int     `json:"pieces"`
	Have        int     `json:"have"`
	Complete    bool    `json:"complete"`
	Peers       int     `json:"peers"`
	Downloaded  int64   `json:"downloaded_bytes"`
	Uploaded    int64   `json:"uploaded_bytes"`
	Redundant   int64   `json:"redundant_bytes"` // received but not needed: endgame duplicates, blocks that crossed a cancel
	DownRate    float64 `json:"download_rate"`
	UpRate      float64 `json:"upload_rate"`
	ETASeconds  float64 `json:"eta_seconds,omitempty"`
	Seconds     float64 `json:"seconds"`
	Error       string  `json:"error,omitempty"`
	HaveInfo    bool    `json:"have_manifest"`
	Banned      int     `json:"banned_peers,omitempty"`
	SuperSeeded bool    `json:"super_seeding,omitempty"`
	// Conns is each connection's state, when asked for (StatusWithConns).
	Conns []ConnStatus `json:"connections,omitempty"`
}

// ConnStatus is the state of one connection of a swarm: who chokes whom,
// who wants what, and what is in flight.
type ConnStatus struct {
	Peer           string  `json:"peer"`
	Outbound       bool    `json:"outbound"`
	Pieces         int     `json:"pieces"` // the peer's
	HaveAll        bool    `json:"have_all,omitempty"`
	AmChoking      bool    `json:"am_choking"`
	AmInterested   bool    `json:"am_interested"`
	PeerChoking    bool    `json:"peer_choking"`
	PeerInterested bool    `json:"peer_interested"`
	Asked          int     `json:"asked"`    // our requests it has not answered
	Requests       int     `json:"requests"` // its requests we have not served
	Offered        int     `json:"offered,omitempty"`
	DownRate       float64 `json:"download_rate"`
	UpRate         float64 `json:"upload_rate"`
	SinceBlock     float64 `json:"seconds_since_block"`
}

// StatusWithConns is Status with each connection's state.
func (s *Swarm) StatusWithConns() Status {
	st := s.Status()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for _, c := range s.conns {
		since := now.Sub(c.lastBlock).Seconds()
		if c.lastBlock.IsZero() {
			since = now.Sub(c.connected).Seconds()
		}
		st.Conns = append(st.Conns, ConnStatus{
			Peer: c.p.String(), Outbound: c.outbound, Pieces: c.npieces, HaveAll: c.haveAll,
			AmChoking: c.amChoking, AmInterested: c.amInterested, PeerChoking: c.peerChoking, PeerInterested: c.peerInterested,
			Asked: len(c.asked), Requests: len(c.reqs), Offered: len(c.offered),
			DownRate: c.downRate, UpRate: c.upRate, SinceBlock: since,
		})
	}
	slices.SortFunc(st.Conns, func(a, b ConnStatus) int { return strings.Compare(a.Peer, b.Peer) })
	return st
}

// Status reports progress.
func (s *Swarm) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		InfoHash: s.hash.String(), Name: s.name, Magnet: meta.Magnet(s.hash, s.name), Path: s.final,
		Have: s.nhave, Complete: s.complete, Peers: len(s.conns),
		Downloaded: s.downBytes, Uploaded: s.upBytes, Redundant: s.redundant, DownRate: s.downRate, UpRate: s.upRate,
		HaveInfo: s.info != nil, SuperSeeded: s.superSeed, Banned: len(s.banned),
	}
	end := time.Now()
	if s.complete {
		end = s.finished
	}
	st.Seconds = end.Sub(s.started).Seconds()
	if s.info != nil {
		st.Size = s.info.TotalLength()
		st.Pieces = s.info.NumPieces()
		if !s.complete && s.downRate > 0 {
			left := float64(st.Pieces-st.Have) * float64(s.info.PieceLength)
			st.ETASeconds = left / s.downRate
		}
	}
	if s.failed != nil {
		st.Error = s.failed.Error()
	}
	return st
}

var errBadBlock = errors.New("block outside the manifest")

const (
	announceInterval  = 10 * time.Minute
	announceRetry     = 5 * time.Second
	findInterval      = 2 * time.Second
	requestTimeout    = 30 * time.Second
	stallTimeout      = 60 * time.Second
	keepAliveInterval = 60 * time.Second
	requestSeconds    = 1
	minPipeline       = 2
	maxPipeline       = 512
	superSeedOffers   = 2
	stealAfter        = 300 * time.Millisecond // silence of a peer after which its requests may move
	stealCheck        = 100 * time.Millisecond // how often idle peers are offered such requests
	eagerDials        = 4                      // dials made at once whatever the peer IDs
	staggerDial       = 50 * time.Millisecond  // how long the other dials wait
	deferredDial      = 300 * time.Millisecond // how long the larger ID waits to be dialled
	maxPEX            = 50
)

package swarm

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
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
	conns     map[peer.ID]*conn
	dialing   map[peer.ID]bool
	deferred  map[peer.ID]bool // dials waiting for the other side to dial first
	known     map[peer.ID]bool
	banned    map[peer.ID]string
	suspects  map[int][]suspectBlock  // blocks of pieces that failed, by piece
	partial   map[int][]byte          // blocks of pieces under way, by piece
	pexNew    []peer.ID               // peers connected since the last PEX batch
	from      map[int]map[int]peer.ID // who sent each block of them
	cacheMu   sync.Mutex
	cache     []*cachedPiece // pieces read lately to serve, oldest first
	metaBuf   []byte         // the manifest being fetched from peers
	metaGot   []bool
	metaFrom  peer.ID
	started   time.Time
	finished  time.Time
	downBytes int64
	upBytes   int64
	downRate  float64
	upRate    float64
	lastDown  int64
	lastUp    int64
	dirty     bool
	spare     float64    // of the upload cap that binds this swarm, see spareLocked
	upSpare   spareMeter // of this swarm's own upload cap
	redundant int64      // block bytes that arrived but were not needed
	spread    int        // pipeline bound, see spreadLocked
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
		started:  m.cfg.Now(),
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
func (s *Swarm) setInfo(info *meta.Info, raw []byte, st *Storage, seeding bool) error {
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
	if seeding {
		for i := range n {
			s.have.Set(i)
			s.pick.SetHave(i)
		}
		s.nhave = n
		s.complete = true
		s.finished = s.m.cfg.Now()
		close(s.done)
	}
	return nil
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
	if err := s.setInfo(info, raw, st, false); err != nil {
		st.Close()
		return err
	}
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

// AddPeers connects to peers of this swarm learned elsewhere.
func (s *Swarm) AddPeers(ids ...peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.learnLocked(id)
	}
}

func (s *Swarm) learnLocked(id peer.ID) {
	if id == s.m.h.ID() || id == "" {
		return
	}
	s.known[id] = true
	if !s.shouldDialLocked(id) {
		return
	}
	if len(s.conns)+len(s.dialing) >= eagerDials {
		// The first few dials go at once; the rest wait a little, so that
		// data starts to flow from the first peers before a crowd's
		// handshakes take the CPU (33 peers meeting on 2 cores spent the
		// first 0.15 s setting up 1,024 streams while nothing moved).
		// Two peers that learn of each other together (a crowd that found
		// itself through the ring or PEX) would both dial, and one of the
		// two streams would be set up only to be dropped: the larger ID
		// waits longer, for the smaller one's stream, and dials only if it
		// has not come.
		delay := staggerDial
		if s.m.h.ID() > id {
			delay = deferredDial
		}
		if !s.deferred[id] {
			s.deferred[id] = true
			time.AfterFunc(delay, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				delete(s.deferred, id)
				if s.shouldDialLocked(id) {
					s.dialNowLocked(id)
				}
			})
		}
		return
	}
	s.dialNowLocked(id)
}

// shouldDialLocked reports whether a dial of id is wanted now.
func (s *Swarm) shouldDialLocked(id peer.ID) bool {
	switch {
	case s.ctx.Err() != nil, s.banned[id] != "", s.conns[id] != nil, s.dialing[id]:
		return false
	case len(s.conns)+len(s.dialing) >= s.m.cfg.MaxPeers:
		return false
	case s.complete && s.pick != nil && !s.superSeed:
		// A seed waits to be dialled by those who need it.
		return false
	}
	return true
}

// dialNowLocked starts a dial of id.
func (s *Swarm) dialNowLocked(id peer.ID) {
	s.dialing[id] = true
	s.wg.Add(1)
	go s.dial(id)
}

func (s *Swarm) dial(id peer.ID) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.dialing, id)
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	defer cancel()
	st, err := s.m.open(ctx, id)
	if err != nil {
		s.log.Debug("dial", "peer", id, "err", err)
		return
	}
	_ = st.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := wire.WriteHandshake(st, s.hash); err != nil {
		st.Reset()
		return
	}
	h, err := wire.ReadHandshake(st)
	if err != nil || h != s.hash {
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	s.attach(st, true)
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
		now := s.m.cfg.Now()
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
			need := !s.complete && len(s.conns) < s.m.cfg.MaxPeers/2
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
	// Reconnect to known peers while short of them.
	if !s.complete && len(s.conns) < 4 {
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

// spareLocked is the fraction of upload capacity this swarm left unused
// lately, which the choker's extra slots follow: of its own cap, of the
// global cap, or the less of the two when both bind; 0 when uncapped (the
// regular slots then take whatever they can).
func (s *Swarm) spareLocked(now time.Time) float64 {
	global, capped := s.m.globalSpare(now)
	if s.up == nil {
		return global // 0 when uncapped
	}
	s.upSpare.read(now, s.upBytes, float64(s.up.l.Limit()))
	if capped {
		return min(global, s.upSpare.spare)
	}
	return s.upSpare.spare
}

// attach takes a connection that finished its handshake.
func (s *Swarm) attach(st network.Stream, outbound bool) {
	p := st.Conn().RemotePeer()
	self := s.m.h.ID()
	s.mu.Lock()
	if s.ctx.Err() != nil || s.banned[p] != "" {
		s.mu.Unlock()
		st.Reset()
		return
	}
	if old := s.conns[p]; old != nil {
		// Both sides dialled at once: keep the stream opened by the
		// smaller peer ID, on both sides alike.
		keepNew := (outbound && self < p) || (!outbound && p < self)
		if !keepNew {
			s.mu.Unlock()
			st.Reset()
			return
		}
		old.close()
	}
	c := newConn(s, p, st, outbound)
	s.conns[p] = c
	s.known[p] = true
	s.wg.Add(2)
	go c.writeLoop()
	go c.readLoop()
	// Open with what we have.
	switch {
	case s.info == nil:
		c.send(&wire.Message{ID: wire.HaveNone})
		if s.metaFrom == "" {
			s.requestMetaLocked(c)
		}
	case s.complete && s.superSeed:
		c.send(&wire.Message{ID: wire.HaveNone})
		s.offerLocked(c)
	case s.complete:
		c.send(&wire.Message{ID: wire.HaveAll})
	case s.nhave == 0:
		c.send(&wire.Message{ID: wire.HaveNone})
	default:
		c.send(&wire.Message{ID: wire.Bitfield, Bitfield: append([]byte(nil), s.have...)})
	}
	s.sendPEXLocked(c)
	// And the others hear of the newcomer soon, so that a crowd that
	// found only the seed meets itself in a round trip. Newcomers are
	// told in batches: a crowd of n arriving together costs n messages
	// per batch, not n² one-peer messages.
	s.pexNew = append(s.pexNew, p)
	if len(s.pexNew) == 1 {
		time.AfterFunc(pexBatchDelay, s.flushNewcomers)
	}
	s.rechokeLocked(s.m.cfg.Now())
	s.mu.Unlock()
}

// dropLocked forgets a closed connection.
func (s *Swarm) dropLocked(c *conn) {
	if s.conns[c.p] != c {
		return
	}
	delete(s.conns, c.p)
	if s.pick != nil {
		s.pick.PeerGone(string(c.p))
	}
	if s.metaFrom == c.p {
		s.metaFrom = ""
		for _, o := range s.conns {
			s.requestMetaLocked(o)
			break
		}
	}
	s.rechokeLocked(s.m.cfg.Now())
}

// rechokeLocked runs the choker and applies its decision.
func (s *Swarm) rechokeLocked(now time.Time) {
	if len(s.conns) == 0 {
		return
	}
	ms := now.UnixMilli()
	peers := make([]choker.Peer, 0, len(s.conns))
	for _, c := range s.conns {
		var last int64
		if !c.lastBlock.IsZero() {
			last = c.lastBlock.UnixMilli()
		}
		peers = append(peers, choker.Peer{
			ID: string(c.p), Interested: c.peerInterested,
			DownRate: c.downRate, UpRate: c.upRate,
			LastBlock: last, Connected: c.connected.UnixMilli(),
		})
	}
	unchoke := s.chok.Decide(ms, peers, s.complete, s.spare)
	for _, c := range s.conns {
		want := unchoke[string(c.p)]
		if want == !c.amChoking {
			continue
		}
		c.amChoking = !want
		if want {
			c.send(&wire.Message{ID: wire.Unchoke})
		} else {
			c.send(&wire.Message{ID: wire.Choke})
			for _, r := range c.reqs {
				c.send(&wire.Message{ID: wire.Reject, Index: r.Index, Begin: r.Begin, Length: r.Length})
			}
			c.reqs = c.reqs[:0]
		}
	}
}

// updateInterestLocked tells c whether we want anything it has.
func (s *Swarm) updateInterestLocked(c *conn) {
	want := s.pick != nil && !s.complete && s.pick.Interesting(string(c.p))
	if want == c.amInterested {
		return
	}
	c.amInterested = want
	if want {
		c.send(&wire.Message{ID: wire.Interested})
		s.fillLocked(c)
	} else {
		c.send(&wire.Message{ID: wire.NotInterested})
	}
}

// offerLocked, while super-seeding, shows c the pieces that have been sent
// least, a couple at a time, so that the seed's upload never carries a
// piece twice before every piece once.
func (s *Swarm) offerLocked(c *conn) {
	n := len(s.offers)
	for len(c.offered) < superSeedOffers {
		best := -1
		start := s.rng.IntN(n)
		for k := range n {
			i := (start + k) % n
			if c.bits.Has(i) || c.offered[i] {
				continue
			}
			if best < 0 || less(s.inSwarm[i], s.offers[i], s.inSwarm[best], s.offers[best]) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		c.offered[best] = true
		s.offers[best]++
		c.send(&wire.Message{ID: wire.Have, Index: uint32(best)})
	}
}

func less(inA bool, offA int, inB bool, offB int) bool {
	if inA != inB {
		return !inA
	}
	return offA < offB
}

// endSuperSeedLocked: every piece is out in the swarm; show everything.
func (s *Swarm) endSuperSeedLocked() {
	s.superSeed = false
	for _, c := range s.conns {
		c.send(&wire.Message{ID: wire.HaveAll})
	}
	s.log.Debug("every piece is in the swarm: super-seeding ends")
}

// sendPEXLocked tells c about the other peers of the swarm.
func (s *Swarm) sendPEXLocked(c *conn) {
	var list [][]byte
	for id := range s.conns {
		if id != c.p {
			b, err := id.Marshal()
			if err == nil {
				list = append(list, b)
			}
		}
		if len(list) == maxPEX {
			break
		}
	}
	if len(list) > 0 {
		c.send(&wire.Message{ID: wire.PEX, Peers: list})
	}
}

// pexBatchDelay is how long newcomers are gathered before the swarm's
// other peers hear of them.
const pexBatchDelay = 100 * time.Millisecond

// flushNewcomers tells every connected peer of the peers that arrived since
// the last batch (each but itself).
func (s *Swarm) flushNewcomers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	news := s.pexNew
	s.pexNew = nil
	if s.ctx.Err() != nil {
		return
	}
	var ids []peer.ID
	var recs [][]byte
	for _, p := range news {
		if s.conns[p] == nil {
			continue // gone already
		}
		if b, err := p.Marshal(); err == nil {
			ids, recs = append(ids, p), append(recs, b)
		}
	}
	for _, o := range s.conns {
		var list [][]byte
		for i, p := range ids {
			if p != o.p && len(list) < maxPEX {
				list = append(list, recs[i])
			}
		}
		if len(list) > 0 {
			o.send(&wire.Message{ID: wire.PEX, Peers: list})
		}
	}
}

// requestMetaLocked asks c for the manifest.
func (s *Swarm) requestMetaLocked(c *conn) {
	s.metaFrom = c.p
	next := 0
	for i, ok := range s.metaGot {
		if !ok {
			next = i
			break
		}
	}
	c.send(&wire.Message{ID: wire.MetaRequest, Index: uint32(next)})
}

// onMetaData stores a piece of the manifest from c; when whole and its hash
// is the infohash, the download can start.
func (s *Swarm) onMetaData(c *conn, m *wire.Message) {
	s.mu.Lock()
	if s.info != nil || m.Length == 0 || m.Length > meta.MaxInfoSize {
		s.mu.Unlock()
		return
	}
	total := int(m.Length)
	if s.metaBuf == nil || len(s.metaBuf) != total {
		s.metaBuf = make([]byte, total)
		s.metaGot = make([]bool, (total+wire.BlockSize-1)/wire.BlockSize)
	}
	i := int(m.Index)
	off := i * wire.BlockSize
	if i >= len(s.metaGot) || len(m.Block) != min(wire.BlockSize, total-off) {
		s.mu.Unlock()
		return
	}
	copy(s.metaBuf[off:], m.Block)
	s.metaGot[i] = true
	for j, ok := range s.metaGot {
		if !ok {
			c.send(&wire.Message{ID: wire.MetaRequest, Index: uint32(j)})
			s.mu.Unlock()
			return
		}
	}
	raw := s.metaBuf
	s.metaBuf, s.metaGot = nil, nil
	s.mu.Unlock()
	if sha1.Sum(raw) != s.hash {
		s.log.Info("manifest from peer does not match the infohash", "peer", c.p)
		s.ban(c, "sent a manifest that does not match the infohash")
		return
	}
	info, err := meta.DecodeInfo(raw)
	if err != nil {
		s.ban(c, "sent a bad manifest: "+err.Error())
		return
	}
	if err := s.prepare(info, raw, nil); err != nil {
		s.fail(err)
		return
	}
	s.log.Info("got the manifest", "name", info.Name, "bytes", info.TotalLength(), "pieces", info.NumPieces())
	_ = s.save()
	s.mu.Lock()
	for _, o := range s.conns {
		o.applyPendingLocked()
		s.updateInterestLocked(o)
	}
	s.mu.Unlock()
}

// fail stops the download with err (a full disk, a target that exists).
func (s *Swarm) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

// ban drops c and refuses it from now on.
func (s *Swarm) ban(c *conn, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.banLocked(c.p, why)
}

func (s *Swarm) banLocked(p peer.ID, why string) {
	if s.banned[p] != "" {
		return
	}
	s.banned[p] = why
	s.log.Warn("banned a peer", "peer", p, "why", why)
	if c := s.conns[p]; c != nil {
		c.close()
	}
}

// pieceDone verifies a piece whose blocks have all arrived.
// The piece is checked in memory and written to disk only once it
// verified, with one write: the disk never holds a piece that fails its
// hash, and the connection's reader goes back to the network at once.
func (s *Swarm) pieceDone(piece int, buf []byte, from map[int]peer.ID) {
	defer s.m.bufs.put(buf)
	ok := sha1.Sum(buf) == s.info.PieceHash(piece)
	var err error
	if ok {
		s.mu.Lock()
		st := s.store
		s.mu.Unlock()
		err = st.WriteBlock(piece, 0, buf)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.complete || s.have.Has(piece) {
		return
	}
	if err != nil {
		s.failLocked(fmt.Errorf("write %s: %w", s.final, err))
		return
	}
	if !ok {
		s.pick.Failed(piece)
		senders := map[peer.ID]bool{}
		for _, p := range from {
			senders[p] = true
		}
		if len(senders) == 1 {
			for p := range senders {
				s.banLocked(p, fmt.Sprintf("sent piece %d, which fails its hash", piece))
			}
			return
		}
		// Several peers sent blocks of it: remember what each sent, and
		// once the piece verifies, ban those whose blocks differ.
		var bad []suspectBlock
		for begin, p := range from {
			end := begin + min(wire.BlockSize, len(buf)-begin)
			bad = append(bad, suspectBlock{p: p, begin: begin, sum: sha1.Sum(buf[begin:end])})
		}
		s.suspects[piece] = append(s.suspects[piece], bad...)
		return
	}
	for _, sb := range s.suspects[piece] {
		end := sb.begin + min(wire.BlockSize, len(buf)-sb.begin)
		if sha1.Sum(buf[sb.begin:end]) != sb.sum {
			s.banLocked(sb.p, fmt.Sprintf("sent a block of piece %d that differs from the verified piece", piece))
		}
	}
	delete(s.suspects, piece)
	s.pick.Verified(piece)
	s.markHave(piece)
	for _, c := range s.conns {
		// Everyone hears it, even a peer that has the piece: a
		// super-seeding peer learns from it where its pieces went.
		c.send(&wire.Message{ID: wire.Have, Index: uint32(piece)})
		s.updateInterestLocked(c)
	}
	if s.nhave == s.info.NumPieces() {
		// Flush with the lock released: a flush can take a tenth of a
		// second or more (the whole file may still be in the page cache),
		// and meanwhile the others keep fetching from us. finishLocked's
		// own flush then finds little left to write.
		st := s.store
		s.mu.Unlock()
		err := st.Sync()
		s.mu.Lock()
		switch {
		case s.ctx.Err() != nil:
			// Stopped meanwhile: the data stays in its .part file and
			// the next start verifies it and finishes.
		case err == nil:
			err = s.finishLocked()
		default:
			err = fmt.Errorf("flush %s: %w", s.final, err)
		}
		if err != nil && s.ctx.Err() == nil {
			s.failLocked(err)
		}
	}
}

func (s *Swarm) failLocked(err error) {
	if s.failed != nil || s.complete {
		return
	}
	s.failed = err
	s.log.Error("swarm failed", "err", err)
	for _, c := range s.conns {
		c.close()
	}
	close(s.done)
	s.haltLocked()
}

// finishLocked gives the data its final name and turns the swarm into a
// seed.
func (s *Swarm) finishLocked() error {
	if s.complete {
		return nil
	}
	if err := s.store.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", s.final, err)
	}
	s.store.Close()
	part := s.final + ".part"
	if _, err := os.Lstat(s.final); err == nil {
		return fmt.Errorf("%s appeared while downloading; the data stays in %s", s.final, part)
	}
	if err := os.Rename(part, s.final); err != nil {
		return fmt.Errorf("rename %s: %w", part, err)
	}
	st, err := OpenStorage(s.info, s.final, false)
	if err != nil {
		return err
	}
	s.store = st
	s.complete = true
	s.finished = s.m.cfg.Now()
	s.dirty = true
	for _, c := range s.conns {
		if c.amInterested {
			c.amInterested = false
			c.send(&wire.Message{ID: wire.NotInterested})
		}
	}
	close(s.done)
	s.log.Info("complete", "path", s.final, "seconds", s.finished.Sub(s.started).Seconds())
	return nil
}

// suspectBlock is a block of a piece that failed its hash: who sent it and
// the SHA-1 of what they sent.
type suspectBlock struct {
	p     peer.ID
	begin int
	sum   [20]byte
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
	end := s.m.cfg.Now()
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

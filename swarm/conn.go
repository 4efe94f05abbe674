package swarm

import (
	"bufio"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/picker"
	"github.com/peer-overlay/peer/swarm/wire"
)

// conn is one peer of one swarm: a libp2p stream carrying BEP 3 messages.
// Its fields are guarded by the swarm's mutex, except where noted.
type conn struct {
	s        *Swarm
	p        peer.ID
	st       network.Stream
	outbound bool
	out      chan *wire.Message // to the writer
	stop     chan struct{}
	once     sync.Once
	// unreserve gives back the memory reserved for the read loop's
	// buffers; the read loop calls it when it ends.
	unreserve func()

	closed         bool
	amChoking      bool
	amInterested   bool
	peerChoking    bool
	peerInterested bool
	bits           wire.Bits // what the peer has (once the manifest is known)
	haveAll        bool
	npieces        int    // bits set in bits
	pendingBits    []byte // a bitfield that came before the manifest
	pendingHave    []int
	reqs           []request                      // its requests to us, oldest first
	queued         int                            // our blocks to it waiting in out
	pins           map[*wire.Message]*cachedPiece // cached pieces its queued blocks point into
	asked          map[picker.Block]time.Time
	depth          float64      // request pipeline depth, in blocks
	offered        map[int]bool // super-seeding: pieces shown to it
	given          map[int]bool // super-seeding under a budget: pieces it was sent whole
	recv, sent     int64        // piece bytes this second
	sentTotal      int64        // piece bytes sent over the connection
	downRate       float64
	upRate         float64
	lastBlock      time.Time
	lastSent       time.Time
	connected      time.Time
}

type request struct {
	wire.Message
	seq uint64
}

func newConn(s *Swarm, p peer.ID, st network.Stream, outbound bool, unreserve func()) *conn {
	c := &conn{
		s: s, p: p, st: st, outbound: outbound, unreserve: unreserve,
		out:       make(chan *wire.Message, outQueue),
		pins:      make(map[*wire.Message]*cachedPiece),
		stop:      make(chan struct{}),
		amChoking: true, peerChoking: true,
		asked:     make(map[picker.Block]time.Time),
		depth:     minPipeline,
		offered:   make(map[int]bool),
		connected: time.Now(),
		lastSent:  time.Now(),
	}
	if s.info != nil {
		c.bits = wire.NewBits(s.info.NumPieces())
	}
	return c
}

// send queues m for the writer; a peer that cannot keep up with control
// messages is dropped rather than block the swarm.
func (c *conn) send(m *wire.Message) {
	if c.closed {
		return
	}
	select {
	case c.out <- m:
		c.lastSent = time.Now()
	default:
		c.s.log.Info("dropping a peer whose send queue is full", "peer", c.p)
		c.close()
	}
}

// close ends the connection (swarm mutex held).
func (c *conn) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.once.Do(func() { close(c.stop) })
	c.st.Reset()
	c.s.dropLocked(c)
}

// pieces is how many pieces the peer has told us it has.
func (c *conn) pieces() int {
	if c.haveAll {
		return len(c.bits) * 8
	}
	return c.npieces
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	// The write buffer is borrowed only while there is something to send:
	// a crowd of a thousand connections, mostly idle, would otherwise hold
	// 64 MiB of buffers, and allocating them all at once (as a crowd that
	// meets connects) costs the collector more than the first pieces do.
	var w *bufio.Writer
	defer func() {
		if w != nil {
			putWriter(w)
		}
	}()
	for {
		var m *wire.Message
		select {
		case <-c.stop:
			return
		case m = <-c.out:
		}
		if w == nil {
			w = getWriter(c.st)
		}
		if err := wire.WriteMessage(w, m); err != nil {
			c.s.closeConn(c)
			return
		}
		if m.ID == wire.Piece && !m.KeepAlive {
			c.s.sentPiece(c, m)
		}
		if len(c.out) == 0 {
			err := w.Flush()
			putWriter(w)
			w = nil
			if err != nil {
				c.s.closeConn(c)
				return
			}
		}
	}
}

// writeBufferSize lets a run of blocks reach the stream as a few large
// writes (each a seal and a syscall) rather than one per block.
const writeBufferSize = 64 << 10

var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}

func getWriter(dst io.Writer) *bufio.Writer {
	w := writers.Get().(*bufio.Writer)
	w.Reset(dst)
	return w
}

func putWriter(w *bufio.Writer) {
	w.Reset(nil)
	writers.Put(w)
}

func (s *Swarm) closeConn(c *conn) {
	s.mu.Lock()
	c.close()
	s.mu.Unlock()
}

// sentPiece counts a block that went out.
func (s *Swarm) sentPiece(c *conn, m *wire.Message) {
	n := int64(len(m.Block))
	s.mu.Lock()
	e := c.pins[m]
	delete(c.pins, m)
	c.queued--
	c.sent += n
	c.sentTotal += n
	s.upBytes += n
	if s.superSeed && !c.closed && int64(m.Begin)+int64(len(m.Block)) >= s.info.PieceSize(int(m.Index)) {
		// The last block of an offered piece went out: offer the next
		// one now rather than when the peer says it has this one.
		delete(c.offered, int(m.Index))
		if s.egressBudget > 0 {
			if c.given == nil {
				c.given = make(map[int]bool)
			}
			c.given[int(m.Index)] = true
		}
		s.inSwarmLocked(int(m.Index))
		if s.superSeed && !c.closed {
			s.offerLocked(c)
		}
	}
	s.mu.Unlock()
	s.release(e)
	s.m.mu.Lock()
	s.m.upBytes += n
	s.m.mu.Unlock()
	s.m.notify()
}

// inSwarmLocked notes that piece is out in the swarm, while super-seeding.
func (s *Swarm) inSwarmLocked(piece int) {
	if !s.superSeed || s.inSwarm[piece] {
		return
	}
	s.inSwarm[piece] = true
	for _, in := range s.inSwarm {
		if !in {
			return
		}
	}
	if s.egressBudget > 0 {
		s.everyOut = true
		s.log.Debug("every piece is in the swarm: offering more within the egress budget", "budget", s.egressBudget, "uploaded", s.upBytes)
		for _, c := range s.conns {
			if !c.closed {
				s.offerLocked(c) // some had none on offer at the end of the first pass
			}
		}
		return
	}
	s.endSuperSeedLocked()
}

func (c *conn) readLoop() {
	s := c.s
	defer s.wg.Done()
	defer c.unreserve()
	defer s.closeConn(c)
	s.mu.Lock()
	maxBits := 0
	if s.info != nil {
		maxBits = (s.info.NumPieces() + 7) / 8
	}
	s.mu.Unlock()
	r := wire.NewReader(c.st, maxBits)
	idle := 2*keepAliveInterval + 30*time.Second
	for {
		_ = c.st.SetReadDeadline(time.Now().Add(idle))
		m, err := r.ReadMessage()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Debug("connection ends", "peer", c.p, "err", err)
			}
			return
		}
		if m.KeepAlive {
			continue
		}
		if m.ID == wire.Piece {
			if err := s.onPiece(c, m); err != nil {
				s.log.Info("peer sent a bad block", "peer", c.p, "err", err)
				return
			}
			continue
		}
		if m.ID == wire.MetaData {
			s.onMetaData(c, m.Clone())
			s.mu.Lock()
			if s.info != nil {
				r.SetMaxBitfield((s.info.NumPieces() + 7) / 8)
			}
			s.mu.Unlock()
			continue
		}
		if err := s.onMessage(c, m); err != nil {
			s.log.Info("peer broke the protocol", "peer", c.p, "err", err)
			return
		}
	}
}

// onMessage handles everything but blocks and the manifest.
func (s *Swarm) onMessage(c *conn, m *wire.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.closed {
		return nil
	}
	n := 0
	if s.info != nil {
		n = s.info.NumPieces()
	}
	switch m.ID {
	case wire.Choke:
		c.peerChoking = true
		if s.pick != nil {
			s.pick.PeerChoked(string(c.p))
		}
		clear(c.asked)
	case wire.Unchoke:
		c.peerChoking = false
		s.fillLocked(c)
	case wire.Interested:
		if !c.peerInterested {
			c.peerInterested = true
			s.rechokeLocked(time.Now())
		}
	case wire.NotInterested:
		if c.peerInterested {
			c.peerInterested = false
			c.reqs = c.reqs[:0]
			s.rechokeLocked(time.Now())
		}
	case wire.Have:
		i := int(m.Index)
		if s.info == nil {
			c.pendingHave = append(c.pendingHave, i)
			return nil
		}
		if i >= n {
			return fmt.Errorf("have %d: only %d pieces", i, n)
		}
		if !c.bits.Has(i) {
			c.bits.Set(i)
			c.npieces++
			s.pick.PeerHave(string(c.p), i)
		}
		if s.superSeed {
			delete(c.offered, i)
			s.inSwarmLocked(i)
			if s.superSeed {
				s.offerLocked(c)
			}
		}
		s.updateInterestLocked(c)
		s.fillLocked(c)
	case wire.Bitfield:
		if s.info == nil {
			c.pendingBits = append([]byte(nil), m.Bitfield...)
			return nil
		}
		if err := wire.CheckBits(m.Bitfield, n); err != nil {
			return err
		}
		c.bits = append(wire.Bits(nil), m.Bitfield...)
		c.npieces = c.bits.Count()
		s.pick.PeerBitfield(string(c.p), c.bits.Has)
		s.updateInterestLocked(c)
	case wire.HaveAll:
		c.haveAll = true
		if s.info != nil {
			for i := range n {
				c.bits.Set(i)
			}
			s.pick.PeerHaveAll(string(c.p))
			s.updateInterestLocked(c)
			s.fillLocked(c)
		}
	case wire.HaveNone:
	case wire.Request:
		return s.onRequestLocked(c, m)
	case wire.Cancel:
		for i, r := range c.reqs {
			if r.Index == m.Index && r.Begin == m.Begin && r.Length == m.Length {
				c.reqs = append(c.reqs[:i], c.reqs[i+1:]...)
				break
			}
		}
	case wire.Reject:
		b := picker.Block{Piece: int(m.Index), Begin: int(m.Begin), Length: int(m.Length)}
		if _, ok := c.asked[b]; ok {
			delete(c.asked, b)
			s.pick.Rejected(string(c.p), b)
		}
	case wire.MetaRequest:
		i := int(m.Index)
		if s.infoRaw == nil || i*wire.BlockSize >= len(s.infoRaw) {
			c.send(&wire.Message{ID: wire.MetaReject, Index: m.Index})
			return nil
		}
		end := min(len(s.infoRaw), (i+1)*wire.BlockSize)
		c.send(&wire.Message{ID: wire.MetaData, Index: m.Index, Length: uint32(len(s.infoRaw)), Block: s.infoRaw[i*wire.BlockSize : end]})
	case wire.MetaReject:
		if s.metaFrom == c.p {
			s.metaFrom = ""
			for _, o := range s.conns {
				if o != c {
					s.requestMetaLocked(o)
					break
				}
			}
		}
	case wire.PEX:
		ids := make([]peer.ID, 0, len(m.Peers))
		for _, b := range m.Peers {
			if id, err := peer.IDFromBytes(b); err == nil {
				ids = append(ids, id)
			}
		}
		s.learnAllLocked(ids)
	}
	return nil
}

// applyPendingLocked replays what c said before the manifest was known.
func (c *conn) applyPendingLocked() {
	s := c.s
	n := s.info.NumPieces()
	c.bits = wire.NewBits(n)
	if c.haveAll {
		for i := range n {
			c.bits.Set(i)
		}
		s.pick.PeerHaveAll(string(c.p))
		return
	}
	if c.pendingBits != nil && wire.CheckBits(c.pendingBits, n) == nil {
		copy(c.bits, c.pendingBits)
	}
	for _, i := range c.pendingHave {
		if i < n {
			c.bits.Set(i)
		}
	}
	c.pendingBits, c.pendingHave = nil, nil
	c.npieces = c.bits.Count()
	s.pick.PeerBitfield(string(c.p), c.bits.Has)
}

// onRequestLocked queues a peer's request for the uploader.
func (s *Swarm) onRequestLocked(c *conn, m *wire.Message) error {
	reject := func() {
		c.send(&wire.Message{ID: wire.Reject, Index: m.Index, Begin: m.Begin, Length: m.Length})
	}
	if s.info == nil || int(m.Index) >= s.info.NumPieces() {
		reject()
		return nil
	}
	if int64(m.Begin)+int64(m.Length) > s.info.PieceSize(int(m.Index)) {
		return fmt.Errorf("request %d+%d beyond piece %d", m.Begin, m.Length, m.Index)
	}
	if c.amChoking || !s.have.Has(int(m.Index)) || len(c.reqs) >= maxQueuedRequests {
		reject()
		return nil
	}
	if s.superSeed && s.egressBudget > 0 && !c.offered[int(m.Index)] {
		// Under a budget the seed serves what it has on offer to c, and
		// counts those offers: a piece taken back from c when it was
		// choked is another peer's now (or was sent whole already).
		reject()
		return nil
	}
	c.reqs = append(c.reqs, request{Message: wire.Message{ID: wire.Request, Index: m.Index, Begin: m.Begin, Length: m.Length}, seq: s.m.reqSeq.Add(1)})
	s.m.notify()
	return nil
}

// onPiece keeps a block that arrived, after checking we asked for it and
// still want it; a piece whose blocks are all in is verified and written
// by a goroutine of its own.
func (s *Swarm) onPiece(c *conn, m *wire.Message) error {
	b := picker.Block{Piece: int(m.Index), Begin: int(m.Begin), Length: len(m.Block)}
	s.mu.Lock()
	if s.info == nil || b.Piece >= s.info.NumPieces() || int64(b.Begin)+int64(b.Length) > s.info.PieceSize(b.Piece) {
		s.mu.Unlock()
		return errBadBlock
	}
	s.mu.Unlock()
	if err := s.down.wait(s.ctx, b.Length); err != nil {
		return err
	}
	if err := s.m.down.wait(s.ctx, b.Length); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Only requested blocks count: unrequested data could overwrite
	// blocks another peer sent.
	if _, asked := c.asked[b]; !asked || c.closed {
		s.redundant += int64(b.Length) // cancelled, or taken by another peer
		s.crossedLocked()
		return nil
	}
	delete(c.asked, b)
	c.depth = min(c.depth+1, maxPipeline)
	c.recv += int64(b.Length)
	c.lastBlock = time.Now()
	s.downBytes += int64(b.Length)
	if s.complete || s.have.Has(b.Piece) {
		s.redundant += int64(b.Length)
		return nil
	}
	buf := s.partial[b.Piece]
	if buf == nil {
		buf = s.m.bufs.get(int(s.info.PieceSize(b.Piece)))
		s.partial[b.Piece] = buf
	}
	copy(buf[b.Begin:], m.Block)
	if s.from[b.Piece] == nil {
		s.from[b.Piece] = make(map[int]peer.ID)
	}
	s.from[b.Piece][b.Begin] = c.p
	complete, cancels := s.pick.Received(string(c.p), b)
	for _, p := range cancels {
		if o := s.conns[peer.ID(p)]; o != nil {
			if _, ok := o.asked[b]; ok {
				delete(o.asked, b)
				o.send(blockMsg(wire.Cancel, b))
			}
		}
	}
	if complete {
		from := s.from[b.Piece]
		delete(s.partial, b.Piece)
		delete(s.from, b.Piece)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.pieceDone(b.Piece, buf, from)
			s.mu.Lock()
			for _, o := range s.conns {
				s.fillLocked(o)
			}
			s.mu.Unlock()
		}()
	}
	s.fillLocked(c)
	return nil
}

const (
	outQueue          = 1024
	maxQueuedRequests = 1024
	maxQueuedBlocks   = 64 // blocks of ours waiting in one peer's send queue
)

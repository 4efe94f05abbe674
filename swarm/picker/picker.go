// Package picker decides which blocks to request from which peer during a
// BitTorrent-style download: a few random pieces first, then rarest-first,
// with strict priority for pieces already started and an endgame mode that
// duplicates the last outstanding requests.
//
// A Picker is a deterministic core: it does no I/O, starts no goroutines,
// reads no clock and draws randomness only from the *rand.Rand it is given.
// It is not safe for concurrent use; the caller serialises access.
package picker

import (
	"cmp"
	"math/bits"
	"math/rand/v2"
	"slices"
)

// Block is one request unit: Length bytes at offset Begin within Piece.
type Block struct{ Piece, Begin, Length int }

// Config describes the content and the picking policy.
type Config struct {
	NumPieces   int
	PieceLength int64 // all pieces but the last
	TotalLength int64 // last piece = TotalLength - (NumPieces-1)*PieceLength
	BlockSize   int   // 16 KiB when 0
	RandomFirst int   // pieces picked at random before rarest-first: 4 when 0, none when negative
	Rand        *rand.Rand
	// Stale, when set, limits the endgame to blocks that one of their
	// owners is not serving (see Steal): a block whose owner is sending
	// will arrive soon, and a copy of it asked elsewhere is mostly upload
	// capacity spent twice. Nil duplicates every outstanding block.
	Stale func(owner string, b Block) bool
	// MaxOwners, when positive, caps how many peers an endgame block is
	// outstanding from at once (2: one copy).
	MaxOwners int
}

// DefaultBlockSize is the block size used when Config.BlockSize is 0.
const DefaultBlockSize = 16 << 10

// randomTries bounds rejection sampling before falling back to a scan.
const randomTries = 32

type blockKey struct{ piece, index int }

type peerState struct {
	all  bool     // has every piece (HaveAll or equivalent)
	bits []uint64 // pieces it has, when !all
	want int      // pieces it has that we lack, when !all
	reqs map[blockKey]struct{}
}

func (ps *peerState) has(i int) bool {
	return ps.all || ps.bits[i>>6]&(1<<(uint(i)&63)) != 0
}

// pieceState is the per-block bookkeeping of a started piece.
type pieceState struct {
	received []bool
	owners   [][]string // peers the block is outstanding from
	nrecv    int
	free     int      // blocks neither received nor outstanding
	next     int      // no free block below this index
	contrib  []string // distinct peers that sent blocks, in arrival order
}

func (st *pieceState) isFree(j int) bool { return !st.received[j] && len(st.owners[j]) == 0 }

// Picker tracks our pieces, the peers' pieces and the outstanding requests.
type Picker struct {
	n           int
	pieceLen    int64
	lastLen     int64
	blockSize   int
	randomFirst int
	rng         *rand.Rand
	stale       func(owner string, b Block) bool
	maxOwners   int

	have       []bool
	numHave    int
	state      []*pieceState // non-nil iff the piece is started and not had
	started    []int         // started pieces, oldest first
	freeBlocks int           // blocks of missing pieces neither received nor outstanding
	left       int           // blocks of missing pieces not received

	// Availability: avail counts bitfield peers, numAll the peers that have
	// everything, so the availability of i is avail[i]+numAll. Pieces that
	// are neither had nor started sit in buckets[avail[i]] at pos[i].
	avail   []int32
	numAll  int
	buckets [][]int32
	pos     []int32

	peers map[string]*peerState

	// urgent lists pieces a reader waits for, most urgent first (see
	// Prioritize); Pick serves them before anything else.
	urgent []int
}

// New returns a Picker for cfg. It panics on an inconsistent Config or a nil Rand.
func New(cfg Config) *Picker {
	if cfg.Rand == nil {
		panic("picker: Config.Rand is required")
	}
	if cfg.NumPieces < 0 {
		panic("picker: negative NumPieces")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.BlockSize < 0 {
		panic("picker: negative BlockSize")
	}
	switch {
	case cfg.RandomFirst == 0:
		cfg.RandomFirst = 4
	case cfg.RandomFirst < 0:
		cfg.RandomFirst = 0
	}
	n := cfg.NumPieces
	p := &Picker{
		n:           n,
		pieceLen:    cfg.PieceLength,
		blockSize:   cfg.BlockSize,
		randomFirst: cfg.RandomFirst,
		rng:         cfg.Rand,
		stale:       cfg.Stale,
		maxOwners:   cfg.MaxOwners,
		have:        make([]bool, n),
		state:       make([]*pieceState, n),
		avail:       make([]int32, n),
		pos:         make([]int32, n),
		peers:       make(map[string]*peerState),
	}
	if n > 0 {
		p.lastLen = cfg.TotalLength - int64(n-1)*cfg.PieceLength
		if cfg.PieceLength <= 0 || p.lastLen <= 0 || p.lastLen > cfg.PieceLength {
			panic("picker: PieceLength and TotalLength do not match NumPieces")
		}
		bucket := make([]int32, n)
		for i := range bucket {
			bucket[i] = int32(i)
			p.pos[i] = int32(i)
			p.freeBlocks += p.numBlocks(i)
		}
		p.left = p.freeBlocks
		p.buckets = [][]int32{bucket}
	}
	return p
}

func (p *Picker) length(i int) int64 {
	if i == p.n-1 {
		return p.lastLen
	}
	return p.pieceLen
}

func (p *Picker) numBlocks(i int) int {
	bs := int64(p.blockSize)
	return int((p.length(i) + bs - 1) / bs)
}

func (p *Picker) block(i, j int) Block {
	begin := j * p.blockSize
	return Block{Piece: i, Begin: begin, Length: int(min(int64(p.blockSize), p.length(i)-int64(begin)))}
}

// locate validates b and returns its piece and block index.
func (p *Picker) locate(b Block) (i, j int, ok bool) {
	if b.Piece < 0 || b.Piece >= p.n || b.Begin < 0 || b.Begin%p.blockSize != 0 {
		return 0, 0, false
	}
	j = b.Begin / p.blockSize
	if j >= p.numBlocks(b.Piece) || p.block(b.Piece, j) != b {
		return 0, 0, false
	}
	return b.Piece, j, true
}

// ---- availability buckets ----

func (p *Picker) bucketAdd(i int) {
	a := int(p.avail[i])
	for a >= len(p.buckets) {
		p.buckets = append(p.buckets, nil)
	}
	p.pos[i] = int32(len(p.buckets[a]))
	p.buckets[a] = append(p.buckets[a], int32(i))
}

func (p *Picker) bucketRemove(i int) {
	a, k := int(p.avail[i]), p.pos[i]
	b := p.buckets[a]
	last := b[len(b)-1]
	b[k] = last
	p.pos[last] = k
	p.buckets[a] = b[:len(b)-1]
	p.pos[i] = -1
}

func (p *Picker) addAvail(i int, d int32) {
	in := p.pos[i] >= 0
	if in {
		p.bucketRemove(i)
	}
	p.avail[i] += d
	if in {
		p.bucketAdd(i)
	}
}

// ---- our pieces ----

// SetHave records that we already hold piece verified (e.g. on resume).
func (p *Picker) SetHave(piece int) { p.Verified(piece) }

// Have reports whether we hold piece verified.
func (p *Picker) Have(piece int) bool { return piece >= 0 && piece < p.n && p.have[piece] }

// Done reports whether every piece is verified.
func (p *Picker) Done() bool { return p.numHave == p.n }

// Missing returns the number of pieces not yet verified.
func (p *Picker) Missing() int { return p.n - p.numHave }

// Verified records that piece passed its hash check. Requests still
// outstanding for it are forgotten (the caller may cancel them).
func (p *Picker) Verified(piece int) {
	if piece < 0 || piece >= p.n || p.have[piece] {
		return
	}
	p.have[piece] = true
	p.numHave++
	if st := p.state[piece]; st != nil {
		for j, owners := range st.owners {
			for _, o := range owners {
				if ps := p.peers[o]; ps != nil {
					delete(ps.reqs, blockKey{piece, j})
				}
			}
		}
		p.freeBlocks -= st.free
		p.left -= len(st.received) - st.nrecv
		p.unlistStarted(piece)
	} else {
		p.freeBlocks -= p.numBlocks(piece)
		p.left -= p.numBlocks(piece)
		p.bucketRemove(piece)
	}
	for _, ps := range p.peers {
		if !ps.all && ps.has(piece) {
			ps.want--
		}
	}
}

// Failed records that piece failed its hash check: every received block goes
// back to the pool. It returns the distinct peers that sent blocks of it,
// sorted.
func (p *Picker) Failed(piece int) (contributors []string) {
	if piece < 0 || piece >= p.n || p.have[piece] || p.state[piece] == nil {
		return nil
	}
	st := p.state[piece]
	p.left += st.nrecv
	contributors = slices.Clone(st.contrib)
	slices.Sort(contributors)
	for j, r := range st.received {
		if r {
			st.received[j] = false
			st.free++
			p.freeBlocks++
		}
	}
	st.nrecv, st.next, st.contrib = 0, 0, nil
	p.unstartIfIdle(piece)
	return contributors
}

func (p *Picker) start(i int) *pieceState {
	nb := p.numBlocks(i)
	st := &pieceState{received: make([]bool, nb), owners: make([][]string, nb), free: nb}
	p.bucketRemove(i)
	p.state[i] = st
	p.started = append(p.started, i)
	return st
}

func (p *Picker) unlistStarted(i int) {
	p.state[i] = nil
	if k := slices.Index(p.started, i); k >= 0 {
		p.started = slices.Delete(p.started, k, k+1)
	}
}

// unstartIfIdle returns a started piece with nothing received or outstanding
// to the rarest-first pool.
func (p *Picker) unstartIfIdle(i int) {
	st := p.state[i]
	if st == nil || st.free != len(st.received) {
		return
	}
	p.unlistStarted(i)
	p.bucketAdd(i)
}

// ---- peers' pieces ----

func (p *Picker) peer(id string) *peerState {
	ps := p.peers[id]
	if ps == nil {
		ps = &peerState{bits: make([]uint64, (p.n+63)/64), reqs: make(map[blockKey]struct{})}
		p.peers[id] = ps
	}
	return ps
}

// forgetPieces removes what we knew of ps's pieces from the availability.
func (p *Picker) forgetPieces(ps *peerState) {
	if ps.all {
		ps.all = false
		p.numAll--
		ps.bits = make([]uint64, (p.n+63)/64)
	} else {
		for w, word := range ps.bits {
			for word != 0 {
				bit := word & -word
				word ^= bit
				p.addAvail(w*64+bits.TrailingZeros64(bit), -1)
			}
			ps.bits[w] = 0
		}
	}
	ps.want = 0
}

// PeerHave records that peer announced piece.
func (p *Picker) PeerHave(peer string, piece int) {
	if piece < 0 || piece >= p.n {
		return
	}
	ps := p.peer(peer)
	if ps.has(piece) {
		return
	}
	ps.bits[piece>>6] |= 1 << (uint(piece) & 63)
	p.addAvail(piece, 1)
	if !p.have[piece] {
		ps.want++
	}
}

// PeerBitfield replaces what we knew of peer's pieces with has.
func (p *Picker) PeerBitfield(peer string, has func(piece int) bool) {
	ps := p.peer(peer)
	p.forgetPieces(ps)
	for i := 0; i < p.n; i++ {
		if has(i) {
			ps.bits[i>>6] |= 1 << (uint(i) & 63)
			p.addAvail(i, 1)
			if !p.have[i] {
				ps.want++
			}
		}
	}
}

// PeerHaveAll records that peer has every piece.
func (p *Picker) PeerHaveAll(peer string) {
	ps := p.peer(peer)
	if ps.all {
		return
	}
	p.forgetPieces(ps)
	ps.all = true
	ps.bits = nil
	p.numAll++
}

// PeerGone forgets peer's pieces and returns its outstanding requests to the pool.
func (p *Picker) PeerGone(peer string) {
	ps := p.peers[peer]
	if ps == nil {
		return
	}
	p.releaseAll(peer, ps)
	p.forgetPieces(ps)
	delete(p.peers, peer)
}

// PeerChoked returns peer's outstanding requests to the pool.
func (p *Picker) PeerChoked(peer string) {
	if ps := p.peers[peer]; ps != nil {
		p.releaseAll(peer, ps)
	}
}

// Interesting reports whether peer has a piece we lack.
func (p *Picker) Interesting(peer string) bool {
	ps := p.peers[peer]
	if ps == nil {
		return false
	}
	if ps.all {
		return p.numHave < p.n
	}
	return ps.want > 0
}

// Availability returns how many known peers have piece.
func (p *Picker) Availability(piece int) int {
	if piece < 0 || piece >= p.n {
		return 0
	}
	return int(p.avail[piece]) + p.numAll
}

// Unavailable returns how many missing pieces no known peer has: while it
// is above zero the peers at hand cannot finish the download, however long
// they serve.
func (p *Picker) Unavailable() int {
	if p.numAll > 0 {
		return 0
	}
	n := 0
	for i := range p.n {
		if !p.have[i] && p.avail[i] == 0 {
			n++
		}
	}
	return n
}

// ---- requests ----

// Outstanding returns the number of requests outstanding from peer.
func (p *Picker) Outstanding(peer string) int {
	if ps := p.peers[peer]; ps != nil {
		return len(ps.reqs)
	}
	return 0
}

// Remaining returns the number of blocks of missing pieces not yet
// received, outstanding or not.
func (p *Picker) Remaining() int { return p.left }

// Endgame reports whether every block we lack is received or outstanding.
func (p *Picker) Endgame() bool { return p.freeBlocks == 0 && p.numHave < p.n }

// release drops peer's request for block k; it reports whether peer had it.
func (p *Picker) release(peer string, ps *peerState, k blockKey) bool {
	if _, ok := ps.reqs[k]; !ok {
		return false
	}
	delete(ps.reqs, k)
	st := p.state[k.piece]
	if st == nil {
		return true
	}
	owners := st.owners[k.index]
	if x := slices.Index(owners, peer); x >= 0 {
		st.owners[k.index] = slices.Delete(owners, x, x+1)
	}
	if st.isFree(k.index) {
		st.free++
		p.freeBlocks++
		st.next = min(st.next, k.index)
	}
	return true
}

func (p *Picker) releaseAll(peer string, ps *peerState) {
	keys := make([]blockKey, 0, len(ps.reqs))
	for k := range ps.reqs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b blockKey) int {
		return cmp.Or(cmp.Compare(a.piece, b.piece), cmp.Compare(a.index, b.index))
	})
	for _, k := range keys {
		p.release(peer, ps, k)
	}
	for x, k := range keys {
		if x == 0 || keys[x-1].piece != k.piece {
			p.unstartIfIdle(k.piece)
		}
	}
}

// Rejected returns a request of peer to the pool (refused or timed out).
func (p *Picker) Rejected(peer string, b Block) {
	i, j, ok := p.locate(b)
	ps := p.peers[peer]
	if !ok || ps == nil {
		return
	}
	if p.release(peer, ps, blockKey{i, j}) {
		p.unstartIfIdle(i)
	}
}

// Received records a block that arrived from peer. complete reports that
// this block completed its piece (the caller then checks the hash); cancel
// lists the other peers the same block was outstanding from (endgame, or a
// late block whose request had been handed to another peer), to which the
// caller sends Cancel. A block still needed is accepted even if it
// was not requested from peer; a block of a piece we have, a block already
// received or an invalid block returns (false, nil).
func (p *Picker) Received(peer string, b Block) (complete bool, cancel []string) {
	i, j, ok := p.locate(b)
	if !ok || p.have[i] {
		return false, nil
	}
	st := p.state[i]
	if st == nil {
		st = p.start(i)
	}
	if st.received[j] {
		return false, nil
	}
	owners := st.owners[j]
	if len(owners) == 0 {
		st.free--
		p.freeBlocks--
	}
	k := blockKey{i, j}
	for _, o := range owners {
		if o != peer {
			cancel = append(cancel, o)
		}
		if ps := p.peers[o]; ps != nil {
			delete(ps.reqs, k)
		}
	}
	st.owners[j] = nil
	st.received[j] = true
	st.nrecv++
	p.left--
	if !slices.Contains(st.contrib, peer) {
		st.contrib = append(st.contrib, peer)
	}
	return st.nrecv == len(st.received), cancel
}

// assign records block (i, j) as outstanding from peer and appends it to out.
func (p *Picker) assign(peer string, ps *peerState, st *pieceState, i, j int, out []Block) []Block {
	if st.isFree(j) {
		st.free--
		p.freeBlocks--
	}
	st.owners[j] = append(st.owners[j], peer)
	ps.reqs[blockKey{i, j}] = struct{}{}
	return append(out, p.block(i, j))
}

// takeFree assigns free blocks of started piece i to peer, in order.
func (p *Picker) takeFree(peer string, ps *peerState, i int, out []Block, max int) []Block {
	st := p.state[i]
	for j := st.next; j < len(st.received) && st.free > 0 && len(out) < max; j++ {
		if st.isFree(j) {
			out = p.assign(peer, ps, st, i, j, out)
		}
	}
	for st.next < len(st.received) && !st.isFree(st.next) {
		st.next++
	}
	return out
}

// Pick returns up to max new requests to send to peer and records them as
// outstanding from peer: free blocks of started pieces (oldest first), then
// new pieces (random while we have fewer than RandomFirst pieces, rarest
// first afterwards), then in endgame blocks outstanding from other peers.
func (p *Picker) Pick(peer string, max int) []Block {
	ps := p.peers[peer]
	if ps == nil || max <= 0 || p.numHave == p.n {
		return nil
	}
	var out []Block
	if len(p.urgent) > 0 {
		out = p.pickUrgent(peer, ps, out, max)
	}
	for _, i := range p.started {
		if len(out) >= max {
			break
		}
		if p.state[i].free > 0 && ps.has(i) {
			out = p.takeFree(peer, ps, i, out, max)
		}
	}
	if len(out) < max && p.freeBlocks > 0 {
		sel := selector{random: p.numHave < p.randomFirst}
		for len(out) < max {
			i := p.nextNew(ps, &sel)
			if i < 0 {
				break
			}
			p.start(i)
			out = p.takeFree(peer, ps, i, out, max)
		}
	}
	if len(out) < max && p.Endgame() {
		out = p.pickEndgame(peer, ps, out, max)
	}
	return out
}

// selector carries the search for new pieces across one Pick call, so that
// buckets and scans are not repeated for every piece started.
type selector struct {
	random bool
	pooled bool    // pool holds the remaining candidates (of bucket, when !random)
	pool   []int32 // candidates not yet taken
	bucket int     // rarest-first: buckets below hold nothing for this peer
}

func (p *Picker) eligible(ps *peerState, i int) bool {
	return !p.have[i] && p.state[i] == nil && ps.has(i)
}

func (p *Picker) drawPool(sel *selector) int {
	k := p.rng.IntN(len(sel.pool))
	i := sel.pool[k]
	sel.pool[k] = sel.pool[len(sel.pool)-1]
	sel.pool = sel.pool[:len(sel.pool)-1]
	return int(i)
}

// nextNew returns an unstarted piece we lack that ps has, or -1.
func (p *Picker) nextNew(ps *peerState, sel *selector) int {
	if sel.random {
		if !sel.pooled {
			for range randomTries {
				if i := p.rng.IntN(p.n); p.eligible(ps, i) {
					return i
				}
			}
			sel.pooled = true
			for _, b := range p.buckets {
				for _, i := range b {
					if ps.has(int(i)) {
						sel.pool = append(sel.pool, i)
					}
				}
			}
		}
		if len(sel.pool) == 0 {
			return -1
		}
		return p.drawPool(sel)
	}
	for ; sel.bucket < len(p.buckets); sel.bucket, sel.pooled, sel.pool = sel.bucket+1, false, sel.pool[:0] {
		b := p.buckets[sel.bucket]
		if len(b) == 0 {
			continue
		}
		if ps.all {
			return int(b[p.rng.IntN(len(b))])
		}
		if !sel.pooled {
			for range min(randomTries, len(b)) {
				if i := int(b[p.rng.IntN(len(b))]); ps.has(i) {
					return i
				}
			}
			sel.pooled = true
			for _, i := range b {
				if ps.has(int(i)) {
					sel.pool = append(sel.pool, i)
				}
			}
		}
		if len(sel.pool) > 0 {
			return p.drawPool(sel)
		}
	}
	return -1
}

// anyStale reports whether block (i, j) may be duplicated in the endgame.
func (p *Picker) anyStale(owners []string, i, j int) bool {
	if p.stale == nil {
		return true
	}
	b := p.block(i, j)
	return slices.ContainsFunc(owners, func(o string) bool { return p.stale(o, b) })
}

// pickEndgame assigns to peer blocks outstanding only from other peers,
// fewest copies first.
func (p *Picker) pickEndgame(peer string, ps *peerState, out []Block, max int) []Block {
	type cand struct{ i, j, copies int }
	var cands []cand
	for _, i := range p.started {
		if !ps.has(i) {
			continue
		}
		st := p.state[i]
		for j, owners := range st.owners {
			if !st.received[j] && len(owners) > 0 && !slices.Contains(owners, peer) &&
				(p.maxOwners <= 0 || len(owners) < p.maxOwners) && p.anyStale(owners, i, j) {
				cands = append(cands, cand{i, j, len(owners)})
			}
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return cmp.Compare(a.copies, b.copies) })
	for _, c := range cands {
		if len(out) >= max {
			break
		}
		out = p.assign(peer, ps, p.state[c.i], c.i, c.j, out)
	}
	return out
}

// Steal moves to peer up to max blocks that peer has and that are
// outstanding from one other peer only, when stale(owner, block) says that
// owner is not going to serve them soon (the caller judges that from its
// request times: a peer busy serving others sends nothing for a while).
// Blocks go oldest started piece first, in order within a piece. It
// returns the blocks and, for each, the peer it was taken from, to which
// the caller sends Cancel.
//
// Without it a peer with spare upload can sit idle while the pieces it
// could serve wait in the queue of a busy one: requests are not
// duplicated outside the endgame, so whoever was asked first holds them.
// Endgame blocks, which have several owners already, are left alone.
func (p *Picker) Steal(peer string, max int, stale func(owner string, b Block) bool) (out []Block, from []string) {
	ps := p.peers[peer]
	if ps == nil || max <= 0 || p.numHave == p.n {
		return nil, nil
	}
	for _, i := range p.started {
		if len(out) >= max {
			break
		}
		if !ps.has(i) {
			continue
		}
		st := p.state[i]
		for j, owners := range st.owners {
			if len(out) >= max {
				break
			}
			if st.received[j] || len(owners) != 1 || owners[0] == peer {
				continue
			}
			o, b := owners[0], p.block(i, j)
			if !stale(o, b) {
				continue
			}
			k := blockKey{i, j}
			if ops := p.peers[o]; ops != nil {
				delete(ops.reqs, k)
			}
			st.owners[j] = append(owners[:0], peer)
			ps.reqs[k] = struct{}{}
			out, from = append(out, b), append(from, o)
		}
	}
	return out, from
}

// maxUrgent bounds the pieces Prioritize keeps.
const maxUrgent = 256

// Prioritize puts pieces at the head of the queue, in the order given and
// before any asked for earlier: a reader waiting for them (a gateway
// request streaming a file) gets its bytes first, whatever their rarity.
// Pieces already had, or out of range, are ignored.
func (p *Picker) Prioritize(pieces ...int) {
	var head []int
	seen := map[int]bool{}
	for _, i := range pieces {
		if i >= 0 && i < p.n && !p.have[i] && !seen[i] {
			seen[i] = true
			head = append(head, i)
		}
	}
	if len(head) == 0 {
		return
	}
	for _, i := range p.urgent {
		if !seen[i] && !p.have[i] && len(head) < maxUrgent {
			seen[i] = true
			head = append(head, i)
		}
	}
	p.urgent = head
}

// Urgent lists the prioritized pieces not yet had, most urgent first.
func (p *Picker) Urgent() []int {
	p.pruneUrgent()
	return slices.Clone(p.urgent)
}

func (p *Picker) pruneUrgent() {
	p.urgent = slices.DeleteFunc(p.urgent, func(i int) bool { return p.have[i] })
}

// pickUrgent takes free blocks of the prioritized pieces that ps has,
// starting them as needed.
func (p *Picker) pickUrgent(peer string, ps *peerState, out []Block, max int) []Block {
	p.pruneUrgent()
	for _, i := range p.urgent {
		if len(out) >= max {
			break
		}
		if !ps.has(i) {
			continue
		}
		if p.state[i] == nil {
			p.start(i)
		}
		if p.state[i].free > 0 {
			out = p.takeFree(peer, ps, i, out, max)
		}
	}
	return out
}

package swarm

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/picker"
	"github.com/peer-overlay/peer/swarm/wire"
)

// Requests: which blocks we ask of which peer, and when requests move.

// blockMsg is a Request or Cancel of block b.
func blockMsg(id wire.ID, b picker.Block) *wire.Message {
	return &wire.Message{ID: id, Index: uint32(b.Piece), Begin: uint32(b.Begin), Length: uint32(b.Length)}
}

// offerStale gives the peers that have unchoked us but have nothing to do
// for us a chance to take requests that others sit on (see stealLocked).
func (s *Swarm) offerStale() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pick == nil || s.complete {
		return
	}
	s.spread = s.spreadLocked()
	s.rebalanceLocked()
	for _, c := range s.conns {
		if len(c.asked) == 0 {
			s.fillLocked(c)
		}
	}
}

// fillLocked keeps c's request pipeline full to its depth: the depth
// starts at minPipeline and grows by a block for every block that arrives
// (doubling every round trip, as TCP's slow start), and every second it is
// held to about requestSeconds of transfer at the rate c has been sending,
// so that a slow peer does not sit on requests others could serve.
func (s *Swarm) fillLocked(c *conn) {
	if s.pick == nil || s.complete || c.peerChoking || !c.amInterested || c.closed {
		return
	}
	depth := min(int(c.depth), s.spread)
	want := depth - len(c.asked)
	// Ask in batches once the pipeline is deep: one request per block
	// received costs a frame, a seal and a syscall each way.
	if want <= 0 || want < depth/8 {
		return
	}
	now := time.Now()
	picked := s.pick.Pick(string(c.p), want)
	for _, b := range picked {
		c.asked[b] = now
		c.send(blockMsg(wire.Request, b))
	}
	if len(picked) == 0 && len(c.asked) == 0 {
		s.stealLocked(c, now)
	}
}

// spreadLocked computes the bound on every pipeline near the end of a
// download: an even share of the blocks still to come among the peers
// serving us. It is kept in s.spread, refreshed every stealCheck rather
// than for every block that arrives. Deep pipelines fill a link
// mid-download, but near the end they leave the last pieces queued behind
// one peer's upload, a block at a time, while the others have nothing left
// to send us: the last piece alone would take a capped peer 16 block times
// instead of one or two.
func (s *Swarm) spreadLocked() int {
	serving := 0
	for _, c := range s.conns {
		if !c.peerChoking && c.amInterested && !c.closed {
			serving++
		}
	}
	left := s.pick.Remaining()
	return max(minPipeline, (left+serving-1)/max(serving, 1))
}

// rebalanceLocked returns to the pool the requests beyond the spread that a
// peer holds, newest first, so that idle peers take them (see
// spreadLocked). A request taken back may cross its block on the way; near
// the end that costs a few blocks, against a tail of many block times.
func (s *Swarm) rebalanceLocked() {
	if !s.idleServerLocked() {
		return // nobody would take them: the cancels would only cross blocks
	}
	if s.caution >= rebalanceCaution {
		return // blocks have been crossing cancels: these would too
	}
	for _, c := range s.conns {
		extra := len(c.asked) - s.spread
		if extra <= 0 {
			continue
		}
		type ask struct {
			b  picker.Block
			at time.Time
		}
		asks := make([]ask, 0, len(c.asked))
		for b, at := range c.asked {
			asks = append(asks, ask{b, at})
		}
		slices.SortFunc(asks, func(x, y ask) int {
			if r := y.at.Compare(x.at); r != 0 {
				return r
			}
			return cmp.Or(cmp.Compare(y.b.Piece, x.b.Piece), cmp.Compare(y.b.Begin, x.b.Begin))
		})
		for _, a := range asks[:extra] {
			delete(c.asked, a.b)
			s.pick.Rejected(string(c.p), a.b)
			c.send(blockMsg(wire.Cancel, a.b))
		}
	}
}

// idleServerLocked reports whether a peer that has unchoked us, and has a
// piece we want, has nothing asked of it.
func (s *Swarm) idleServerLocked() bool {
	for _, c := range s.conns {
		if !c.peerChoking && c.amInterested && !c.closed && len(c.asked) == 0 {
			return true
		}
	}
	return false
}

// staleLocked reports whether owner is sitting on our request for b: it
// was asked stealAfter ago or more and owner has sent us nothing since, both
// scaled by s.caution. The picker moves such requests to idle peers and, in
// the endgame, copies only such requests.
func (s *Swarm) staleLocked(owner string, b picker.Block) bool {
	o := s.conns[peer.ID(owner)]
	if o == nil {
		return true
	}
	at, ok := o.asked[b]
	if !ok {
		return false
	}
	now := time.Now()
	wait := s.cautious(stealAfter)
	return now.Sub(at) >= wait && now.Sub(o.lastBlock) >= wait
}

// cautious scales a waiting time by s.caution.
func (s *Swarm) cautious(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.caution)
}

// Caution: every block that arrives after its request was moved or
// cancelled is a block of upload wasted. Each one makes the swarm wait
// longer before it moves requests again (by crossedCaution, up to
// maxCaution times stealAfter); the caution decays back
// towards 1 by half every cautionHalfLife. A busy machine, where replies
// and cancels cross often, so settles on moving few requests; a quiet one
// keeps the fast defaults.
//
// Of the blocks that cross, nearly all had been written by the sender
// before the cancel reached it (under 3% were still in its queue): with
// 64 peers on a contended machine a block can spend hundreds of
// milliseconds between two processes' goroutines, so a silence is often
// a block on its way. A step of 1.05 per crossed block let 45-95 MB of a
// 64-peer run's 512 cross; 1.2 settles on caution within a few crossings,
// and a quiet machine, where few cross, hardly feels it.
//
// Taking back the requests beyond the spread (rebalanceLocked) crosses
// blocks the same way, and once blocks have crossed it waits until the
// caution has fallen below rebalanceCaution again.
const (
	crossedCaution   = 1.2
	maxCaution       = 16
	cautionHalfLife  = 4 * time.Second
	rebalanceCaution = 2
)

// crossedLocked notes a block that arrived after its request was moved or
// cancelled.
func (s *Swarm) crossedLocked() {
	s.caution = min(maxCaution, s.caution*crossedCaution)
}

// relaxLocked lets the caution decay over dt.
func (s *Swarm) relaxLocked(dt time.Duration) {
	s.caution = max(1, s.caution*math.Exp2(-dt.Seconds()/cautionHalfLife.Seconds()))
}

// stealLocked gives c, which has unchoked us and has pieces we want but has
// nothing to do for us, the requests that another peer has been sitting
// on: blocks asked of a peer that has sent us nothing for stealAfter are
// cancelled there and asked of c. A peer that uploads to many serves them
// a piece at a time, so our turn there can be seconds away while c's
// upload goes unused. A whole piece moves at once, so that c serves it
// whole.
func (s *Swarm) stealLocked(c *conn, now time.Time) {
	n := max(int(c.depth), int(s.info.PieceLength/wire.BlockSize))
	blocks, from := s.pick.Steal(string(c.p), n, s.staleLocked)
	for k, b := range blocks {
		if o := s.conns[peer.ID(from[k])]; o != nil {
			delete(o.asked, b)
			o.send(blockMsg(wire.Cancel, b))
		}
		c.asked[b] = now
		c.send(blockMsg(wire.Request, b))
	}
}

package swarm

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/peer-overlay/peer/swarm/picker"
	"github.com/peer-overlay/peer/swarm/wire"
)

// Blocks that cross a cancel make the swarm wait longer before it moves
// requests, up to a bound, and the caution fades when they stop.
func TestCautionGrowsOnCrossedBlocksAndFades(t *testing.T) {
	s := &Swarm{caution: 1}
	for range 10 {
		s.crossedLocked()
	}
	grown := s.caution
	if grown <= 1.5 {
		t.Fatalf("caution %.2f after 10 crossed blocks, want it grown", grown)
	}
	for range 1000 {
		s.crossedLocked()
	}
	if s.caution != maxCaution {
		t.Fatalf("caution %.2f, want it held at %d", s.caution, maxCaution)
	}
	if got := s.cautious(time.Second); got != maxCaution*time.Second {
		t.Fatalf("cautious(1s) = %v at caution %v", got, s.caution)
	}
	for range 60 {
		s.relaxLocked(time.Second)
	}
	if s.caution != 1 {
		t.Fatalf("caution %.3f a minute after the last crossed block, want 1", s.caution)
	}
}

// Requests beyond the spread go back to the pool for an idle peer to take,
// but not while blocks have been crossing cancels: those cancels would
// mostly cross too.
func TestRebalanceWaitsWhileBlocksCross(t *testing.T) {
	for _, c := range []struct {
		caution float64
		kept    int
	}{{1, 2}, {rebalanceCaution, 5}} {
		s := &Swarm{caution: c.caution, spread: 2, conns: map[peer.ID]*conn{}}
		s.pick = picker.New(picker.Config{NumPieces: 1, PieceLength: 8 * wire.BlockSize, TotalLength: 8 * wire.BlockSize, Rand: rand.New(rand.NewPCG(1, 1))})
		idle := &conn{s: s, p: "idle", out: make(chan *wire.Message, 8), asked: map[picker.Block]time.Time{}, amInterested: true}
		busy := &conn{s: s, p: "busy", out: make(chan *wire.Message, 8), asked: map[picker.Block]time.Time{}, amInterested: true}
		for j := range 5 {
			busy.asked[picker.Block{Begin: j * wire.BlockSize, Length: wire.BlockSize}] = time.Unix(int64(j), 0)
		}
		s.conns[idle.p], s.conns[busy.p] = idle, busy
		s.rebalanceLocked()
		if len(busy.asked) != c.kept || len(busy.out) != 5-c.kept {
			t.Fatalf("caution %v: %d requests kept and %d cancels sent, want %d kept", c.caution, len(busy.asked), len(busy.out), c.kept)
		}
		for range len(busy.out) {
			if m := <-busy.out; m.ID != wire.Cancel || m.Begin < 2*wire.BlockSize {
				t.Fatalf("caution %v: sent %+v, want cancels of the newest requests", c.caution, m)
			}
		}
	}
}

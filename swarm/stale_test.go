package swarm

import (
	"testing"
	"time"
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

package swarm

// Rate limits: the token buckets of the global and per-swarm caps, and
// how much of a cap went unused (what the choker's extra slots follow).

import (
	"context"
	"time"

	"golang.org/x/time/rate"

	"github.com/peer-overlay/peer/swarm/wire"
)

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

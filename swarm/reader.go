package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/peer-overlay/peer/swarm/meta"
)

// Reading a swarm's data while it downloads: the gateway streams a file
// from the pieces at hand and asks for the ones it waits on first.

// ErrSwarmStopped is returned to a reader whose swarm was removed or whose
// manager closed.
var ErrSwarmStopped = errors.New("swarm stopped")

// haveSignalLocked returns a channel closed the next time a piece arrives,
// the manifest does, or the swarm ends.
func (s *Swarm) haveSignalLocked() <-chan struct{} {
	if s.haveSig == nil {
		s.haveSig = make(chan struct{})
	}
	return s.haveSig
}

// signalLocked wakes the readers waiting in haveSignalLocked.
func (s *Swarm) signalLocked() {
	if s.haveSig != nil {
		close(s.haveSig)
		s.haveSig = nil
	}
}

// wait blocks until sig fires or the read cannot go on.
func (s *Swarm) wait(ctx context.Context, sig <-chan struct{}) error {
	select {
	case <-sig:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrSwarmStopped
	case <-s.done:
		if err := s.Err(); err != nil {
			return err
		}
		return nil // complete: the caller looks again and finds its pieces
	}
}

// WaitInfo returns the manifest, waiting for it to arrive from peers.
func (s *Swarm) WaitInfo(ctx context.Context) (*meta.Info, error) {
	for {
		s.mu.Lock()
		info, failed := s.info, s.failed
		var sig <-chan struct{}
		if info == nil {
			sig = s.haveSignalLocked()
		}
		s.mu.Unlock()
		if info != nil {
			return info, nil
		}
		if failed != nil {
			return nil, failed
		}
		if err := s.wait(ctx, sig); err != nil {
			return nil, err
		}
	}
}

// ReadAt reads len(b) bytes at off of the swarm's data (its files end to
// end, as the manifest lists them). It waits for the pieces the range
// covers, asking for them before any other, and for up to ahead pieces
// past the range as well, so that a reader going forward finds them
// arriving. It returns io.EOF at the end of the data.
func (s *Swarm) ReadAt(ctx context.Context, b []byte, off int64, ahead int) (int, error) {
	info, err := s.WaitInfo(ctx)
	if err != nil {
		return 0, err
	}
	total := info.TotalLength()
	if off < 0 {
		return 0, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= total {
		return 0, io.EOF
	}
	if rest := total - off; int64(len(b)) > rest {
		b = b[:rest]
	}
	if len(b) == 0 {
		return 0, nil
	}
	first := int(off / info.PieceLength)
	last := int((off + int64(len(b)) - 1) / info.PieceLength)
	asked := false
	for {
		s.mu.Lock()
		var missing []int
		for i := first; i <= last; i++ {
			if !s.have.Has(i) {
				missing = append(missing, i)
			}
		}
		if len(missing) == 0 {
			st := s.store
			s.mu.Unlock()
			if err := s.readStore(st, b, off); err != nil {
				return 0, err
			}
			return len(b), nil
		}
		if s.failed != nil {
			err := s.failed
			s.mu.Unlock()
			return 0, err
		}
		if !asked && s.pick != nil {
			// The range first, then the read-ahead.
			for i := last + 1; i <= last+ahead && i < info.NumPieces(); i++ {
				if !s.have.Has(i) {
					missing = append(missing, i)
				}
			}
			s.pick.Prioritize(missing...)
			for _, c := range s.conns {
				s.fillLocked(c)
			}
			asked = true
		}
		sig := s.haveSignalLocked()
		s.mu.Unlock()
		if err := s.wait(ctx, sig); err != nil {
			return 0, err
		}
	}
}

// readStore reads from st, or from the storage that replaced it: the
// download's finish closes the .part file and opens the final one.
func (s *Swarm) readStore(st *Storage, b []byte, off int64) error {
	for range 3 {
		err := st.ReadAt(b, off)
		if err == nil {
			return nil
		}
		s.mu.Lock()
		now := s.store
		s.mu.Unlock()
		if now == st {
			return err
		}
		st = now
	}
	return fmt.Errorf("read %s: the storage kept changing", s.name)
}

package swarm

// Verification and bans: a piece whose blocks are all in is checked
// against its hash and written, or its senders are suspected and banned;
// a swarm that fails or finishes.

import (
	"crypto/sha1"
	"fmt"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/wire"
)

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
	s.finished = time.Now()
	s.dirty = true
	for _, c := range s.conns {
		if c.amInterested {
			c.amInterested = false
			c.send(&wire.Message{ID: wire.NotInterested})
		}
	}
	close(s.done)
	s.log.Info("complete", "path", s.final, "seconds", s.finished.Sub(s.started).Seconds())
	// Saved at once, not on the next tick: a crash in between would leave
	// state that names the .part file the rename just took away.
	if err := s.saveLocked(); err != nil {
		s.log.Warn("saving the completed state", "err", err)
	}
	return nil
}

// suspectBlock is a block of a piece that failed its hash: who sent it and
// the SHA-1 of what they sent.
type suspectBlock struct {
	p     peer.ID
	begin int
	sum   [20]byte
}

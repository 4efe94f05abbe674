package swarm

// The piece cache: blocks to serve are read a whole piece at a time and
// kept pinned while queued.

import (
	"fmt"
)

// block reads a block to serve through a small cache of whole pieces: one
// read per piece instead of one per block, as peers ask for whole pieces.
// The block stays pinned in the cache until release: a piece's buffer goes
// back to the pool only once it has left the cache and every block of it
// has been written out.
func (s *Swarm) block(st *Storage, piece, begin, n int) ([]byte, *cachedPiece, error) {
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	for _, e := range s.cache {
		if e.piece == piece && e.st == st {
			if begin+n > len(e.data) {
				return nil, nil, fmt.Errorf("block %d+%d outside piece %d", begin, n, piece)
			}
			e.refs++
			return e.data[begin : begin+n : begin+n], e, nil
		}
	}
	data := s.m.bufs.get(int(s.info.PieceSize(piece)))
	if err := st.ReadBlock(piece, 0, data); err != nil {
		s.m.bufs.put(data)
		return nil, nil, err
	}
	if keep := max(1, pieceCacheBytes/len(data)); len(s.cache) >= keep {
		drop := len(s.cache) - keep + 1
		for _, e := range s.cache[:drop] {
			e.evicted = true
			if e.refs == 0 {
				s.m.bufs.put(e.data)
			}
		}
		s.cache = append(s.cache[:0], s.cache[drop:]...)
	}
	if begin+n > len(data) {
		s.m.bufs.put(data)
		return nil, nil, fmt.Errorf("block %d+%d outside piece %d", begin, n, piece)
	}
	e := &cachedPiece{st: st, piece: piece, data: data, refs: 1}
	s.cache = append(s.cache, e)
	return data[begin : begin+n : begin+n], e, nil
}

// release unpins a block that block returned.
func (s *Swarm) release(e *cachedPiece) {
	if e == nil {
		return
	}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		s.m.bufs.put(e.data)
	}
}

type cachedPiece struct {
	st      *Storage
	piece   int
	data    []byte
	refs    int  // blocks of it handed out and not yet written
	evicted bool // out of the cache: back to the pool at refs 0
}

// pieceCacheBytes bounds the pieces each swarm keeps for serving.
const pieceCacheBytes = 8 << 20

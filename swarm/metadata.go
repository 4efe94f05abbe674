package swarm

// Metadata exchange: a peer that has only the infohash fetches the
// manifest from its peers, block by block, and checks it against the hash.

import (
	"crypto/sha1"

	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

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

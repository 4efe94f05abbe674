package swarm

// The uploader: one goroutine per Manager that serves queued requests of
// every swarm under the rate limits, a piece at a time per peer.

import (
	"github.com/peer-overlay/peer/swarm/wire"
)

// job is a run of blocks of one piece to upload to one peer.
type job struct {
	s    *Swarm
	c    *conn
	st   *Storage
	req  request   // the request chosen
	reqs []request // it and the requests taken with it
}

// maxRun bounds how many blocks of one piece go to one peer in a run. A
// run is handed to the connection's writer at once, so that it reaches the
// stream as a few large writes instead of one small write per block.
const maxRun = 16

// uploader serves blocks, one at a time, under the rate limits. It prefers
// the next block of the piece it last sent to the same peer, so that a
// piece reaches its peer whole and soon and can be passed on; otherwise the
// oldest request of any unchoked peer goes first.
func (m *Manager) uploader() {
	defer m.wg.Done()
	var last *conn
	var lastPiece uint32
	for {
		j := m.nextJob(last, lastPiece)
		if j == nil {
			select {
			case <-m.ctx.Done():
				return
			case <-m.wake:
			}
			continue
		}
		n := 0
		for _, r := range j.reqs {
			n += int(r.Length)
		}
		if m.up.wait(m.ctx, n) != nil || j.s.up.wait(m.ctx, n) != nil {
			return
		}
		out := make([]*wire.Message, len(j.reqs))
		pins := make([]*cachedPiece, len(j.reqs))
		for i, r := range j.reqs {
			buf, e, err := j.s.block(j.st, int(r.Index), int(r.Begin), int(r.Length))
			if err != nil {
				j.s.log.Warn("read a block to serve", "piece", r.Index, "err", err)
				out[i] = &wire.Message{ID: wire.Reject, Index: r.Index, Begin: r.Begin, Length: r.Length}
				continue
			}
			out[i] = &wire.Message{ID: wire.Piece, Index: r.Index, Begin: r.Begin, Block: buf}
			pins[i] = e
		}
		j.s.mu.Lock()
		for i, msg := range out {
			if msg.ID == wire.Reject {
				j.c.queued--
			}
			if pins[i] != nil && !j.c.closed {
				j.c.pins[msg] = pins[i]
				pins[i] = nil
			}
			j.c.send(msg)
		}
		j.s.mu.Unlock()
		for _, e := range pins {
			// Not handed to a live connection: unpin at once.
			j.s.release(e)
		}
		last, lastPiece = j.c, j.req.Index
	}
}

func (m *Manager) nextJob(last *conn, lastPiece uint32) *job {
	m.mu.Lock()
	swarms := make([]*Swarm, 0, len(m.swarms))
	for _, s := range m.swarms {
		swarms = append(swarms, s)
	}
	m.mu.Unlock()
	var best *job
	found := false
	for _, s := range swarms {
		s.mu.Lock()
		for _, c := range s.conns {
			if c.closed || c.amChoking || len(c.reqs) == 0 || c.queued >= maxQueuedBlocks {
				continue
			}
			if c == last {
				for _, r := range c.reqs {
					if r.Index == lastPiece {
						best, found = &job{s: s, c: c, st: s.store, req: r}, true
						break
					}
				}
				if found {
					break
				}
			}
			// Otherwise the peer furthest behind goes next (fewest
			// pieces), then the one we have sent least: every peer gets
			// whole pieces in turn, has something to pass on early, and
			// none falls behind to finish last.
			if best == nil || behind(c, best.c) {
				best = &job{s: s, c: c, st: s.store, req: c.reqs[0]}
			}
		}
		s.mu.Unlock()
		if found {
			break
		}
	}
	if best == nil {
		return nil
	}
	best.s.mu.Lock()
	defer best.s.mu.Unlock()
	c := best.c
	// The request may have been cancelled meanwhile: take it only if it
	// is still queued.
	at := -1
	for i, r := range c.reqs {
		if r.seq == best.req.seq && !c.closed {
			at = i
			break
		}
	}
	if at < 0 {
		return nil
	}
	// Uncapped, take the peer's other requests for the same piece with it,
	// as many as its send queue allows. Under a cap, blocks go one at a
	// time, each as soon as its tokens are there: a run would hold its
	// first block back until the whole run's tokens were.
	limit := 1
	if m.up == nil && best.s.up == nil {
		limit = min(maxRun, maxQueuedBlocks-c.queued)
	}
	best.reqs = append(best.reqs, c.reqs[at])
	kept := c.reqs[:at] // filtered in place: what is kept never overtakes what is read
	for _, r := range c.reqs[at+1:] {
		if len(best.reqs) < limit && r.Index == best.req.Index {
			best.reqs = append(best.reqs, r)
			continue
		}
		kept = append(kept, r)
	}
	clear(c.reqs[len(kept):])
	c.reqs = kept
	c.queued += len(best.reqs)
	return best
}

// behind orders candidates for the uploader (their swarm's lock held).
func behind(a, b *conn) bool {
	if a.s == b.s {
		if na, nb := a.pieces(), b.pieces(); na != nb {
			return na < nb
		}
	}
	if a.sentTotal != b.sentTotal {
		return a.sentTotal < b.sentTotal
	}
	return a.reqs[0].seq < b.reqs[0].seq
}

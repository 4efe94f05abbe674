package swarm

// Dialing: the peers a swarm learns of, which it dials and when, and the
// connections it attaches and drops.

import (
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/swarm/wire"
)

// AddPeers connects to peers of this swarm learned elsewhere.
func (s *Swarm) AddPeers(ids ...peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.learnAllLocked(ids)
}

// learnAllLocked learns of ids and dials them in a random order. Every
// peer of a crowd hears of the others in the same order (the seed first,
// then the first to arrive), and dialling the first DialPeers of that list
// made a few hubs that every peer dialled and that carried most of the
// traffic and its overhead; a random choice makes a random graph, whose
// load spreads evenly.
func (s *Swarm) learnAllLocked(ids []peer.ID) {
	ids = slices.Clone(ids)
	s.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	for _, id := range ids {
		s.learnLocked(id)
	}
}

func (s *Swarm) learnLocked(id peer.ID) {
	if id == s.m.h.ID() || id == "" {
		return
	}
	s.known[id] = true
	if !s.shouldDialLocked(id) {
		return
	}
	if len(s.conns)+len(s.dialing) >= eagerDials {
		// The first few dials go at once; the rest wait a little, so that
		// data starts to flow from the first peers before a crowd's
		// handshakes take the CPU (33 peers meeting on 2 cores spent the
		// first 0.15 s setting up 1,024 streams while nothing moved).
		// Two peers that learn of each other together (a crowd that found
		// itself through the ring or PEX) would both dial, and one of the
		// two streams would be set up only to be dropped: the larger ID
		// waits longer, for the smaller one's stream, and dials only if it
		// has not come.
		delay := staggerDial
		if s.m.h.ID() > id {
			delay = deferredDial
		}
		if !s.deferred[id] {
			s.deferred[id] = true
			time.AfterFunc(delay, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				delete(s.deferred, id)
				if s.shouldDialLocked(id) {
					s.dialNowLocked(id)
				}
			})
		}
		return
	}
	s.dialNowLocked(id)
}

// shouldDialLocked reports whether a dial of id is wanted now.
func (s *Swarm) shouldDialLocked(id peer.ID) bool {
	switch {
	case s.ctx.Err() != nil, s.banned[id] != "", s.conns[id] != nil, s.dialing[id]:
		return false
	case len(s.conns)+len(s.dialing) >= s.m.cfg.DialPeers:
		return false
	case s.complete && s.pick != nil && !s.superSeed:
		// A seed waits to be dialled by those who need it.
		return false
	}
	return true
}

// dialNowLocked starts a dial of id.
func (s *Swarm) dialNowLocked(id peer.ID) {
	s.dialing[id] = true
	s.wg.Add(1)
	go s.dial(id)
}

func (s *Swarm) dial(id peer.ID) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.dialing, id)
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, handshakeTimeout)
	defer cancel()
	st, err := s.m.open(ctx, id)
	if err != nil {
		s.log.Debug("dial", "peer", id, "err", err)
		return
	}
	_ = st.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := wire.WriteHandshake(st, s.hash); err != nil {
		st.Reset()
		return
	}
	h, err := wire.ReadHandshake(st)
	if err != nil || h != s.hash {
		st.Reset()
		return
	}
	_ = st.SetDeadline(time.Time{})
	s.attach(st, true)
}

// attach takes a connection that finished its handshake. Before its read
// loop reads a message it reserves, from the stream's resource scope, the
// most the loop's reader buffers, and drops the stream if the resource
// manager refuses.
func (s *Swarm) attach(st network.Stream, outbound bool) {
	p := st.Conn().RemotePeer()
	self := s.m.h.ID()
	s.mu.Lock()
	// The reader's Bitfield limit: the read loop finds the same piece
	// count, or a known one where it is unknown here (a smaller limit).
	maxBits := 0
	if s.info != nil {
		maxBits = (s.info.NumPieces() + 7) / 8
	}
	s.mu.Unlock()
	unreserve, err := p2phost.Reserve(st, wire.ReaderMemory(maxBits))
	if err != nil {
		s.log.Info("dropped a stream: no memory for its reader", "peer", p, "err", err)
		st.Reset()
		return
	}
	s.mu.Lock()
	if s.ctx.Err() != nil || s.banned[p] != "" {
		s.mu.Unlock()
		unreserve()
		st.Reset()
		return
	}
	if old := s.conns[p]; old != nil {
		// Both sides dialled at once: keep the stream opened by the
		// smaller peer ID, on both sides alike.
		keepNew := (outbound && self < p) || (!outbound && p < self)
		if !keepNew {
			s.mu.Unlock()
			unreserve()
			st.Reset()
			return
		}
		old.close()
	}
	c := newConn(s, p, st, outbound, unreserve)
	s.conns[p] = c
	s.connsChanged = true
	s.known[p] = true
	s.wg.Add(2)
	go c.writeLoop()
	go c.readLoop()
	// Open with what we have.
	switch {
	case s.info == nil:
		c.send(&wire.Message{ID: wire.HaveNone})
		if s.metaFrom == "" {
			s.requestMetaLocked(c)
		}
	case s.complete && s.superSeed:
		c.send(&wire.Message{ID: wire.HaveNone})
		s.offerLocked(c)
	case s.complete:
		c.send(&wire.Message{ID: wire.HaveAll})
	case s.nhave == 0:
		c.send(&wire.Message{ID: wire.HaveNone})
	default:
		c.send(&wire.Message{ID: wire.Bitfield, Bitfield: append([]byte(nil), s.have...)})
	}
	s.sendPEXLocked(c)
	// And the others hear of the newcomer soon, so that a crowd that
	// found only the seed meets itself in a round trip. Newcomers are
	// told in batches: a crowd of n arriving together costs n messages
	// per batch, not n² one-peer messages.
	s.pexNew = append(s.pexNew, p)
	if len(s.pexNew) == 1 {
		time.AfterFunc(pexBatchDelay, s.flushNewcomers)
	}
	s.rechokeLocked(time.Now())
	s.mu.Unlock()
}

// dropLocked forgets a closed connection.
func (s *Swarm) dropLocked(c *conn) {
	if s.conns[c.p] != c {
		return
	}
	delete(s.conns, c.p)
	if s.pick != nil {
		s.pick.PeerGone(string(c.p))
	}
	s.connsChanged = true
	s.recheckOutLocked()
	if s.metaFrom == c.p {
		s.metaFrom = ""
		for _, o := range s.conns {
			s.requestMetaLocked(o)
			break
		}
	}
	s.rechokeLocked(time.Now())
}

package overlay

import (
	"net"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

// A connection can outlive a link cut and stay stuck after the link heals:
// TCP backs its retransmissions off exponentially, so after a cut of 10 s
// or more the queued bytes wait up to several seconds more, and libp2p
// keeps opening every new stream on that connection. Such a connection is
// closed once it is clearly stuck rather than slow: the link is down, not
// one message has come from the peer on any RON stream for stuckAfter
// (a slow connection still delivers late answers and rows), and yet a new
// TCP handshake to one of the peer's addresses completes at once. Libp2p
// then dials afresh for the next stream.
//
// A handshake completes in the kernel, though, whatever the peer's process
// is doing, so "silent, yet a handshake completes" is also what a peer
// starved of CPU looks like, and closing its connections then only adds
// handshakes to the load. 64 peers on a 2-core machine closed 17,696
// connections in 4 minutes that way, and never settled. So:
//   - while this peer is itself short of CPU (its router's 10 ms tick came
//     over selfLagLimit late within the last selfLagHold), nothing is
//     closed: the machine is busy, and its neighbours are likely as slow
//     as it is. (Counting silent members instead would also stop the
//     closes after a partition heals, when they are needed most.)
//   - a peer's connections are closed at most once per stuckRecloseAfter,
//     doubled (up to stuckRecloseMax) for each close after which the peer
//     was not heard again: a close that did not bring it back is not
//     repeated at every check.
const (
	stuckAfter        = 3 * time.Second
	stuckCheckEvery   = 500 * time.Millisecond
	handshakeTimeout  = time.Second
	handshakeAddrs    = 3 // addresses tried per check
	stuckRecloseAfter = 30 * time.Second
	stuckRecloseMax   = 5 * time.Minute
	selfLagLimit      = 250 * time.Millisecond
	selfLagHold       = stuckAfter // the silence judged may be our own lag
)

// stuckClose is the last close of a peer's stuck connections.
type stuckClose struct {
	at     time.Time
	unheal int // closes in a row after which the peer was not heard
}

// stuckDue picks, from the members that are down and silent and whose
// own pacing allows a check, those to check now: none while this peer
// lagged (its tick late by selfLagLimit) within selfLagHold, and none
// whose connections were closed too recently.
func stuckDue(now time.Time, checkable []peer.ID, lagged time.Time, last map[peer.ID]stuckClose, heard map[peer.ID]time.Time) (due []peer.ID, starved bool) {
	if !lagged.IsZero() && now.Sub(lagged) < selfLagHold {
		return nil, len(checkable) > 0
	}
	for _, p := range checkable {
		if c, ok := last[p]; ok {
			wait := stuckRecloseAfter
			if !heard[p].After(c.at) {
				wait = min(stuckRecloseMax, stuckRecloseAfter<<min(c.unheal, 10))
			}
			if now.Sub(c.at) < wait {
				continue
			}
		}
		due = append(due, p)
	}
	return due, false
}

// heard notes that a message came from p. Call with mu held.
func (r *Router) heardLocked(p peer.ID) { r.heard[p] = time.Now() }

// checkStuck starts a handshake check for every member whose link is down
// and silent. Call without mu.
func (r *Router) checkStuck(now int64) {
	var checkable []peer.ID
	r.mu.Lock()
	for _, m := range r.core.Members() {
		p := peer.ID(m)
		if !r.core.Link(now, m).Down || time.Since(r.heard[p]) < stuckAfter ||
			r.checking[p] || time.Since(r.checkedAt[p]) < stuckCheckEvery {
			continue
		}
		checkable = append(checkable, p)
	}
	due, starved := stuckDue(time.Now(), checkable, r.lagged, r.stuckClosed, r.heard)
	for _, p := range due {
		r.checking[p], r.checkedAt[p] = true, time.Now()
	}
	lag := r.lag
	r.mu.Unlock()
	if starved && time.Since(r.starvedLogged) > time.Minute {
		r.starvedLogged = time.Now()
		r.log.Info("this peer is short of CPU: closing no connections as stuck while it is",
			"silent_members", len(checkable), "tick_late_by", lag.Round(time.Millisecond).String())
	}
	for _, p := range due {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.recoverIfStuck(p)
			r.mu.Lock()
			delete(r.checking, p)
			r.mu.Unlock()
		}()
	}
}

// recoverIfStuck tries a TCP handshake with p; if one completes, the
// network path is back, so p's connections (silent for stuckAfter) are
// closed and its dial backoff cleared, and the next probe dials anew.
func (r *Router) recoverIfStuck(p peer.ID) {
	if !r.handshakes(p) {
		return // the path is still cut: nothing to gain by closing
	}
	// Only a connection older than the silence can be the stuck one: a
	// connection opened since (a hole punch, a direct dial that upgrades a
	// relayed pair) is new, and closing it would undo it.
	silentSince := r.lastHeard(p)
	stale := staleConns(r.h.Network().ConnsToPeer(p), silentSince)
	if len(stale) > 0 {
		r.mu.Lock()
		c := r.stuckClosed[p]
		if !r.heard[p].After(c.at) && !c.at.IsZero() {
			c.unheal++
		} else {
			c.unheal = 0
		}
		c.at = time.Now()
		r.stuckClosed[p] = c
		r.mu.Unlock()
	}
	for _, c := range stale {
		r.log.Info("closing a stuck connection: the link is down and silent, yet a new handshake completes", "peer", p,
			"conn", c.RemoteMultiaddr().String(), "silent_for", time.Since(silentSince).Round(time.Millisecond).String())
		_ = c.Close()
	}
	if sw, ok := r.h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(p)
	}
	r.mu.Lock()
	if s := r.outs[p]; s != nil && s.st != nil {
		s.st.Reset() // its runStream ends; the next probe opens a new one
	}
	r.mu.Unlock()
}

func (r *Router) lastHeard(p peer.ID) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.heard[p]
}

// handshakes reports whether a TCP handshake with one of p's known TCP
// addresses completes within handshakeTimeout.
func (r *Router) handshakes(p peer.ID) bool {
	tried := 0
	for _, a := range r.h.Peerstore().Addrs(p) {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			// A circuit's address is its relay's: reaching the relay
			// says nothing of the path to p.
			continue
		}
		ip, network, port, ok := IPPort(a)
		if !ok || network != "tcp" || ip.IsUnspecified() {
			continue
		}
		if tried++; tried > handshakeAddrs {
			break
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)), handshakeTimeout)
		if err == nil {
			_ = c.Close()
			return true
		}
	}
	return false
}

// staleConns are the connections of conns opened before since.
func staleConns(conns []network.Conn, since time.Time) []network.Conn {
	var out []network.Conn
	for _, c := range conns {
		if c.Stat().Opened.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

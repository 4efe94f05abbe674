package ron

// Probing: the schedule of probes to each member and what their answers,
// losses and real traffic say of each link.

import (
	"math"
)

// Interval is the probe interval per member for the current group size:
// the base interval, or longer when probing every member that often would
// exceed the overhead budget (each peer sends a probe and answers one per
// member per interval).
func (c *Core) Interval() int64 {
	n := float64(len(c.members))
	need := 2 * n * float64(c.cfg.ProbeBytes) * 8 / c.cfg.BudgetBits * 1000
	return max(c.cfg.IntervalMs, int64(math.Ceil(need)))
}

// A probe counts as lost after max(MinTimeoutMs, 4·srtt), and, for
// lateHoldMs after a probe counted lost was answered late, after twice
// that late round trip too. On a machine short of CPU, answers come
// hundreds of milliseconds late, every late one used to count as lost,
// and the links flapped down and up: each flap was a row to every member
// and a signature for each to check (15% of a 64-peer devnet's CPU). A
// peer's own late answers now stretch its timeout, as TCP's RTO backs
// off, until they stop.
func (c *Core) timeout(l *link) int64 {
	t := max(c.cfg.MinTimeoutMs, int64(4*l.srtt))
	if l.late > 0 && l.sentAt-l.lateAt < lateHoldMs {
		t = max(t, int64(2*l.late))
	}
	return t
}

const (
	lateHoldMs = 30000
	maxLateMs  = 2000 // the latest answer that stretches the timeout
)

// Tick times out unanswered probes and returns the probes due now.
func (c *Core) Tick(now int64) []Probe {
	var out []Probe
	iv := c.Interval()
	for _, m := range c.members {
		l := c.links[m]
		if l.outstanding && now-l.sentAt >= c.timeout(l) {
			l.lostSeq, l.lostSentAt = l.seq, l.sentAt
			c.lost(l)
			l.nextAt = now + c.cfg.FastIntervalMs
		}
		if l.outstanding || now < l.nextAt {
			continue
		}
		l.seq++
		l.outstanding = true
		l.sentAt = now
		j := 1 + c.cfg.Jitter*(2*c.cfg.Rand.Float64()-1)
		l.nextAt = now + int64(float64(iv)*j)
		out = append(out, Probe{To: m, Seq: l.seq})
	}
	return out
}

func (c *Core) record(l *link, lost bool) {
	c.linksDirty = true
	l.history <<= 1
	if lost {
		l.history |= 1
	}
	if l.count < c.cfg.Window {
		l.count++
	}
}

func (c *Core) lost(l *link) {
	l.outstanding = false
	c.record(l, true)
	l.lossRun++
	if l.lossRun >= c.cfg.DownAfter {
		l.down = true
	}
}

// ProbeAnswered records the answer to probe seq from to. Stale or unknown
// answers are ignored.
func (c *Core) ProbeAnswered(now int64, to string, seq uint64) {
	l := c.links[to]
	if l != nil && seq != 0 && seq == l.lostSeq {
		// Counted lost, and answered after all: the link is slow, not
		// lossy. Its loss stays counted; its round trip sets the
		// timeout for a while. An answer seconds late, or one to a link
		// already down, is more likely a cut healing (probes queued
		// behind it) than a busy peer, and is not taken: it would hold
		// off noticing the next cut.
		if late := now - l.lostSentAt; late <= maxLateMs && !l.down {
			l.late, l.lateAt = float64(max(late, 1)), now
		}
		l.lostSeq = 0
		return
	}
	if l == nil || !l.outstanding || seq != l.seq {
		return
	}
	l.outstanding = false
	rtt := float64(max(now-l.sentAt, 0))
	rtt = max(rtt, 0.05) // a clock in ms: a loopback answer reads 0
	switch {
	case l.srtt == 0:
		l.srtt, l.rttvar = rtt, rtt/2
	case l.down:
		// The first answer after an outage (Karn's rule): it says the
		// link is back, but its round trip holds the outage's queue (a
		// probe sent during the cut, a retransmission, a new
		// connection). Taken, it inflated the estimate a hundredfold
		// on a sub-millisecond link, and kept routes on an intermediate
		// for seconds after a heal. The estimate from before the
		// outage stands until the next answer.
	case rtt < l.srtt/2:
		// Far below the estimate: the earlier samples carried queueing
		// or setup delay (a new stream, a busy start). Converge fast.
		l.rttvar = (l.rttvar + math.Abs(l.srtt-rtt)) / 2
		l.srtt = (l.srtt + rtt) / 2
	default:
		// RFC 6298's estimator.
		l.rttvar = 0.75*l.rttvar + 0.25*math.Abs(l.srtt-rtt)
		l.srtt = 0.875*l.srtt + 0.125*rtt
	}
	if l.down {
		// Back from an outage: the probes lost while the link was down
		// say nothing of its loss rate now that it is up again.
		l.history, l.count = 0, 0
	}
	c.record(l, false)
	l.lossRun = 0
	l.down = false
	if l.suspect && l.sentAt >= l.suspectAt {
		l.suspect = false // a probe sent since the failure came back
	}
}

// ProbeFailed records that probe seq to to could not even be sent (the
// dial failed): it counts as lost at once and the next probe goes soon.
func (c *Core) ProbeFailed(now int64, to string, seq uint64) {
	l := c.links[to]
	if l == nil || !l.outstanding || seq != l.seq {
		return
	}
	c.lost(l)
	l.nextAt = now + c.cfg.FastIntervalMs
}

// Suspect says real traffic to to is failing: its direct path is left at
// once (routes move to the best one-hop path, as for a broken link) and it
// is probed at once; the first answer to a probe sent from now on clears
// the suspicion, DownAfter losses confirm it.
func (c *Core) Suspect(now int64, to string) {
	l := c.links[to]
	if l == nil {
		return
	}
	if !l.suspect {
		l.suspect, l.suspectAt = true, now
	}
	if !l.outstanding {
		l.nextAt = now
	}
}

// Suspected reports whether to's direct path is suspect.
func (c *Core) Suspected(to string) bool {
	l := c.links[to]
	return l != nil && l.suspect
}

// Observe counts real traffic as a passive measurement: bytes moved to or
// from to in durMs.
func (c *Core) Observe(now int64, to string, bytes int64, durMs int64) {
	l := c.links[to]
	if l == nil || durMs <= 0 || bytes < 64<<10 {
		return // too little to say anything about throughput
	}
	r := float64(bytes) * 1000 / float64(durMs)
	if now-l.passiveAt > c.cfg.RowStaleMs || r > l.passive {
		l.passive = r
	} else {
		l.passive = 0.75*l.passive + 0.25*r
	}
	l.passiveAt = now
	c.linksDirty = true
}

// Link is this peer's measurement of its link to m.
func (c *Core) Link(now int64, m string) LinkState {
	l := c.links[m]
	if l == nil {
		return LinkState{}
	}
	return c.state(now, l)
}

func (c *Core) state(now int64, l *link) LinkState {
	s := LinkState{RTTms: l.srtt, Down: l.down}
	if l.count > 0 {
		s.Loss = float64(popcount(l.history&(1<<l.count-1))) / float64(l.count)
	}
	if s.RTTms > 0 {
		s.Tput = tputEstimate(s.RTTms, s.Loss, c.cfg.Window)
		if l.passive > 0 && now-l.passiveAt <= c.cfg.RowStaleMs {
			s.Tput = max(s.Tput, l.passive)
		}
	}
	return s
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// tputEstimate is the TCP throughput that a path of this round-trip time
// and loss would carry, by the square-root formula of Mathis et al. (as
// RON did), with the loss floored at a fraction of a window's resolution so
// that a loss-free path gets a finite figure, and the round trip floored at
// tputMinRTTms.
func tputEstimate(rttMs, loss float64, window int) float64 {
	const mss = 1460
	p := max(loss, 1/float64(4*window))
	return mss / (max(rttMs, tputMinRTTms) / 1000) * 1.22 / math.Sqrt(p)
}

// tputMinRTTms: below a millisecond, round trips are the scheduling noise
// of the hosts (0.1 to 0.5 ms wobbling probe by probe on one LAN link), not
// what limits a transfer. Read literally, the formula made a one-hop path
// of 0.2 ms "1.5 times faster" than a direct one of 0.3 ms, and held
// throughput routes on an intermediate for 10 s after a heal. Paths under
// it tie on round trip, and loss or real traffic decides.
const tputMinRTTms = 1.0

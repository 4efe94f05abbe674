// Package ron is the deterministic core of RON-style routing: it schedules
// probes to the members of the group, turns their answers into link
// measurements (round-trip time, loss, a throughput estimate), keeps the
// rows that the other members report of their own links, and chooses for
// each destination and metric the best of the direct path and every
// one-hop path, with hysteresis so that routes do not flap.
//
// The core has no goroutines, sockets or clock: the binding calls Tick,
// hands in probe answers and rows, and sends what the core asks for.
// Peers are named by strings (the binding uses peer IDs); times are
// milliseconds on any monotonic clock.
package ron

import (
	"math"
	"math/rand/v2"
	"slices"
)

// Metric is what a path is chosen for.
type Metric uint8

// The metrics, as in RON's per-application path choice.
const (
	Latency    Metric = iota // lowest round-trip time: interactive traffic
	Loss                     // lowest loss: the default class
	Throughput               // highest estimated throughput: bulk
	numMetrics
)

func (m Metric) String() string {
	switch m {
	case Latency:
		return "latency"
	case Loss:
		return "loss"
	case Throughput:
		return "throughput"
	}
	return "metric?"
}

// Config tunes the core. Zero fields take the defaults noted.
type Config struct {
	IntervalMs     int64   // base probe interval per member (500)
	Jitter         float64 // ± fraction of the interval (0.2)
	MinTimeoutMs   int64   // a probe counts as lost after max(this, 4·srtt) (200)
	FastIntervalMs int64   // re-probe interval after a loss (100)
	DownAfter      int     // consecutive losses that mark a link down (3)
	Window         int     // probes the loss rate is measured over (20, at most 64)
	BudgetBits     float64 // probe overhead budget per peer, bits/s (20000): the interval grows with the group to stay in it
	ProbeBytes     int     // bytes on the wire per probe or answer, for the budget (100)
	RowStaleMs     int64   // another member's row older than this (or 3 row intervals) is ignored (30000)
	RowRefreshMs   int64   // own row is re-sent at least this often (20000), or every row interval when that is longer
	RowBudgetBits  float64 // row overhead budget per peer, bits/s (8000): sets the row interval, the least time between two rows
	RowMinMs       int64   // the row interval is at least this (1000)
	Rand           *rand.Rand
}

func (c *Config) fill() {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.IntervalMs, 500)
	def(&c.MinTimeoutMs, 200)
	def(&c.FastIntervalMs, 100)
	def(&c.RowStaleMs, 30000)
	def(&c.RowRefreshMs, 20000)
	def(&c.RowMinMs, 1000)
	if c.RowBudgetBits <= 0 {
		c.RowBudgetBits = 8000
	}
	if c.Jitter <= 0 || c.Jitter >= 1 {
		c.Jitter = 0.2
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 3
	}
	if c.Window <= 0 || c.Window > 64 {
		c.Window = 20
	}
	if c.BudgetBits <= 0 {
		c.BudgetBits = 20000
	}
	if c.ProbeBytes <= 0 {
		c.ProbeBytes = 100
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(1, 2))
	}
}

// LinkState is what is known of one link.
type LinkState struct {
	RTTms float64 `json:"rtt_ms"`                 // smoothed round-trip time; 0 when never measured
	Loss  float64 `json:"loss"`                   // fraction of the recent probes lost
	Tput  float64 `json:"throughput_bytes_per_s"` // estimated throughput
	Down  bool    `json:"down"`                   // the last DownAfter probes were all lost
}

// usable reports whether the link may carry traffic.
func (l LinkState) usable() bool { return l.RTTms > 0 && !l.Down }

// Row is one member's report of its own links, by destination.
type Row struct {
	Owner string
	Seq   uint64
	Links map[string]LinkState
}

// Probe asks the binding to send a probe.
type Probe struct {
	To  string
	Seq uint64
}

// link is this peer's own measurement of its link to one member.
type link struct {
	srtt, rttvar float64
	history      uint64 // bit i set: probe i (newest is bit 0) was lost
	count        int    // probes in history
	lossRun      int    // consecutive losses, newest first
	down         bool
	seq          uint64
	outstanding  bool
	sentAt       int64
	nextAt       int64
	passive      float64 // throughput seen on real traffic, bytes/s
	passiveAt    int64
	// suspect: real traffic failed at suspectAt, and no probe sent since
	// has been answered. The direct path is not used meanwhile.
	suspect   bool
	suspectAt int64
}

type route struct {
	via string // "" is direct
	// A move the measurements have called for at every evaluation since
	// candSince.
	pending   bool
	cand      string
	candSince int64
}

// Core is the RON state of one peer.
type Core struct {
	self    string
	cfg     Config
	members []string // sorted, without self
	links   map[string]*link
	rows    map[string]rowAt
	routes  [numMetrics]map[string]route
	rowSeq  uint64
	sentRow map[string]LinkState // the links last reported in our row
	rowAt   int64
}

type rowAt struct {
	row Row
	at  int64
}

// New returns the core of the peer named self.
func New(self string, cfg Config) *Core {
	cfg.fill()
	c := &Core{self: self, cfg: cfg, links: map[string]*link{}, rows: map[string]rowAt{}}
	for m := range c.routes {
		c.routes[m] = map[string]route{}
	}
	return c
}

// Members lists the group as the core sees it, without self, sorted.
func (c *Core) Members() []string { return slices.Clone(c.members) }

// SetMembers replaces the group. New members are probed at once; the
// links, rows and routes of members that left are forgotten.
func (c *Core) SetMembers(now int64, members []string) {
	next := make([]string, 0, len(members))
	for _, m := range members {
		if m != c.self && m != "" {
			next = append(next, m)
		}
	}
	slices.Sort(next)
	next = slices.Compact(next)
	keep := map[string]bool{}
	for _, m := range next {
		keep[m] = true
		if c.links[m] == nil {
			// Spread first probes over one interval.
			c.links[m] = &link{nextAt: now + c.cfg.Rand.Int64N(c.cfg.IntervalMs/4+1)}
		}
	}
	for m := range c.links {
		if !keep[m] {
			delete(c.links, m)
			delete(c.rows, m)
			for i := range c.routes {
				delete(c.routes[i], m)
			}
		}
	}
	c.members = next
}

// Interval is the probe interval per member for the current group size:
// the base interval, or longer when probing every member that often would
// exceed the overhead budget (each peer sends a probe and answers one per
// member per interval).
func (c *Core) Interval() int64 {
	n := float64(len(c.members))
	need := 2 * n * float64(c.cfg.ProbeBytes) * 8 / c.cfg.BudgetBits * 1000
	return max(c.cfg.IntervalMs, int64(math.Ceil(need)))
}

func (c *Core) timeout(l *link) int64 {
	return max(c.cfg.MinTimeoutMs, int64(4*l.srtt))
}

// Tick times out unanswered probes and returns the probes due now.
func (c *Core) Tick(now int64) []Probe {
	var out []Probe
	iv := c.Interval()
	for _, m := range c.members {
		l := c.links[m]
		if l.outstanding && now-l.sentAt >= c.timeout(l) {
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
	if l == nil || !l.outstanding || seq != l.seq {
		return
	}
	l.outstanding = false
	rtt := float64(max(now-l.sentAt, 0))
	rtt = max(rtt, 0.05) // a clock in ms: a loopback answer reads 0
	switch {
	case l.srtt == 0:
		l.srtt, l.rttvar = rtt, rtt/2
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
// that a loss-free path gets a finite figure.
func tputEstimate(rttMs, loss float64, window int) float64 {
	const mss = 1460
	p := max(loss, 1/float64(4*window))
	return mss / (rttMs / 1000) * 1.22 / math.Sqrt(p)
}

// OwnRow returns this peer's row when it should be sent to the group: when
// a link changed noticeably since the last row sent (went up or down, RTT by
// a quarter and 1 ms, loss by 5 points, throughput by half) or when the
// last one is RowRefreshMs old. ok is false when nothing needs sending.
func (c *Core) OwnRow(now int64) (Row, bool) {
	cur := map[string]LinkState{}
	for _, m := range c.members {
		if s := c.Link(now, m); s.RTTms > 0 || s.Down {
			cur[m] = s
		}
	}
	ri := c.RowInterval()
	due := c.sentRow == nil || now-c.rowAt >= max(c.cfg.RowRefreshMs, ri)
	urgent := false // a link went down or came back: worth a row at once
	if !due {
		changes := len(cur) != len(c.sentRow)
		for m, s := range cur {
			old, ok := c.sentRow[m]
			if !ok || old.Down != s.Down {
				urgent = true
				break
			}
			changes = changes || changed(old, s)
		}
		// Other changes wait out the row interval, so that measurements
		// that wobble under load cannot flood the group with rows.
		due = urgent || changes && now-c.rowAt >= ri
	}
	if !due || len(cur) == 0 {
		return Row{}, false
	}
	c.rowSeq++
	c.sentRow, c.rowAt = cur, now
	return Row{Owner: c.self, Seq: c.rowSeq, Links: cur}, true
}

// RowSeq restarts this peer's row numbering above seq (after a restart, so
// that members who kept an old row take the new ones).
func (c *Core) RowSeq(seq uint64) { c.rowSeq = max(c.rowSeq, seq) }

// LastRowSeq is the sequence number of the last row OwnRow made.
func (c *Core) LastRowSeq() uint64 { return c.rowSeq }

// RowInterval is the least time between two rows of this peer, in ms:
// what keeps rows within RowBudgetBits as the group grows (a row carries
// an entry per member and goes to every member). Only a link going down or
// coming back is sent sooner.
func (c *Core) RowInterval() int64 {
	n := float64(len(c.members))
	rowBits := (rowHeaderBytes + rowEntryBytes*n) * 8
	return max(c.cfg.RowMinMs, int64(math.Ceil(rowBits*n/c.cfg.RowBudgetBits*1000)))
}

// Estimated bytes on the wire of a row: its header (owner, sequence,
// signature, framing) and each entry.
const (
	rowHeaderBytes = 190
	rowEntryBytes  = 16
)

func (c *Core) rowStale() int64 { return max(c.cfg.RowStaleMs, 3*c.RowInterval()) }

func changed(a, b LinkState) bool {
	if a.Down != b.Down || (a.RTTms > 0) != (b.RTTms > 0) {
		return true
	}
	if d := math.Abs(a.RTTms - b.RTTms); d > 1 && d > a.RTTms/4 {
		return true
	}
	// The throughput estimate follows from RTT and loss: a change in it
	// that neither explains is noise (at sub-millisecond RTTs it swings
	// by several times from probe to probe), and the periodic refresh
	// carries it anyway.
	return math.Abs(a.Loss-b.Loss) >= 0.1
}

// ApplyRow keeps r, another member's report of its own links, if it is
// newer than the one held. The binding checks that r is signed by its
// owner before handing it in. It reports whether r was kept.
func (c *Core) ApplyRow(now int64, r Row) bool {
	if old, ok := c.rows[r.Owner]; ok && old.row.Seq >= r.Seq {
		return false
	}
	return c.ReapplyRow(now, r)
}

// ReapplyRow keeps r, received at (ms), even when a row of the same
// sequence number is held: the binding re-reads a row it kept when the
// group changes, since entries for members it did not know yet were left
// out the first time. An older row is still refused.
func (c *Core) ReapplyRow(at int64, r Row) bool {
	if r.Owner == c.self || c.links[r.Owner] == nil {
		return false // not a member
	}
	if old, ok := c.rows[r.Owner]; ok && old.row.Seq > r.Seq {
		return false
	}
	c.rows[r.Owner] = rowAt{row: r, at: at}
	return true
}

// Path is a way to a destination: direct, or through one intermediate.
type Path struct {
	Via   string  `json:"via,omitempty"` // "" for the direct path
	RTTms float64 `json:"rtt_ms"`
	Loss  float64 `json:"loss"`
	Tput  float64 `json:"throughput_bytes_per_s"`
	OK    bool    `json:"ok"` // every link of it is up and measured
}

// candidates lists the direct path and every one-hop path to dst that the
// current measurements describe.
func (c *Core) candidates(now int64, dst string) []Path {
	direct := c.Link(now, dst)
	ok := direct.usable() && !c.links[dst].suspect
	out := []Path{{RTTms: direct.RTTms, Loss: direct.Loss, Tput: direct.Tput, OK: ok}}
	for _, via := range c.members {
		if via == dst {
			continue
		}
		first := c.Link(now, via)
		r, ok := c.rows[via]
		if !ok || now-r.at > c.rowStale() || !first.usable() {
			continue
		}
		second, ok := r.row.Links[dst]
		if !ok || !second.usable() {
			continue
		}
		out = append(out, Path{
			Via:   via,
			RTTms: first.RTTms + second.RTTms,
			Loss:  1 - (1-first.Loss)*(1-second.Loss),
			Tput:  min(first.Tput, second.Tput),
			OK:    true,
		})
	}
	return out
}

// better reports whether a beats b for m: clearly (by the margin that
// justifies leaving b) when margin is set, else at all.
func better(m Metric, a, b Path, margin bool) bool {
	if a.OK != b.OK {
		return a.OK
	}
	switch m {
	case Latency:
		if margin {
			return a.RTTms*1.25+2 < b.RTTms
		}
		return a.RTTms < b.RTTms
	case Loss:
		if margin {
			return a.Loss < b.Loss-0.05
		}
		if a.Loss != b.Loss {
			return a.Loss < b.Loss
		}
		return a.RTTms < b.RTTms
	case Throughput:
		if margin {
			return a.Tput > 1.3*b.Tput
		}
		return a.Tput > b.Tput
	}
	return false
}

// closeTo reports whether the direct path d is within the return band of
// the best path b: near enough that an indirect route goes back to it. The
// band is narrower than the margin for leaving the direct path, so that
// measurements wobbling between the two do not move the route.
func closeTo(m Metric, d, b Path) bool {
	switch m {
	case Latency:
		return d.RTTms <= b.RTTms*1.1+1
	case Loss:
		return d.Loss <= b.Loss+0.02
	case Throughput:
		return d.Tput*1.1 >= b.Tput
	}
	return false
}

// holdMs is how long a better path must stay better before a working route
// moves to it (a broken path is left at once). Going back to the direct
// path needs only returnHoldMs: it is the default path, it costs no
// intermediate's capacity, and should it fail again it is left at once, so
// a heal is taken within a few probes rather than after a full hold.
const (
	holdMs       = 5000
	returnHoldMs = 1000
)

// Route returns the path to use to dst for metric m, and updates the route
// held for it. The direct path is used unless a one-hop path is clearly
// better; an indirect route returns to the direct path once that is nearly
// as good as the best. A working route moves only when the move has been
// called for at every evaluation for holdMs, so that wobbling or flapping
// measurements do not move it; a route whose path stops working moves at
// once.
func (c *Core) Route(now int64, dst string, m Metric) Path {
	if m >= numMetrics || c.links[dst] == nil {
		return Path{}
	}
	cands := c.candidates(now, dst)
	best := cands[0]
	for _, p := range cands[1:] {
		if better(m, p, best, false) {
			best = p
		}
	}
	direct := cands[0]
	cur, held := c.routes[m][dst]
	var curPath Path
	found := false
	if held {
		for _, p := range cands {
			if p.Via == cur.via {
				curPath, found = p, true
				break
			}
		}
	}
	if !held || !found || !curPath.OK {
		// No route yet, or its path broke: choose now.
		pick := direct
		if !direct.OK || better(m, best, direct, true) {
			pick = best
		}
		c.routes[m][dst] = route{via: pick.Via}
		return pick
	}
	want := curPath
	switch {
	case curPath.Via != "" && direct.OK && (closeTo(m, direct, best) || !better(m, curPath, direct, true)):
		// Back to the direct path once it is nearly the best, or once the
		// indirect path held is no longer clearly better than it: noisy
		// estimates (throughput at sub-millisecond RTTs, say) that make
		// some other path look best now and then must not keep an
		// indirect route alive.
		want = direct
	case better(m, best, curPath, true):
		want = best
	}
	switch {
	case want.Via == cur.via:
		cur.pending = false
	case !cur.pending || cur.cand != want.Via:
		cur.pending, cur.cand, cur.candSince = true, want.Via, now
	case now-cur.candSince >= holdMs || want.Via == "" && now-cur.candSince >= returnHoldMs:
		cur = route{via: want.Via}
		curPath = want
	}
	c.routes[m][dst] = cur
	return curPath
}

// Candidates returns the direct path (first) and every usable one-hop path
// to dst, for display.
func (c *Core) Candidates(now int64, dst string) []Path {
	if c.links[dst] == nil {
		return nil
	}
	return c.candidates(now, dst)
}

// Relays returns up to n intermediates to try towards dst when its direct
// path fails: first the measured one-hop paths to dst, best first for m;
// then, SOSR-style, the other members whose own links are up, nearest
// first, which may well reach dst though no row says so (dst may not even
// be a member).
func (c *Core) Relays(now int64, dst string, n int, m Metric) []string {
	var out []string
	seen := map[string]bool{dst: true}
	if c.links[dst] != nil {
		hops := c.candidates(now, dst)[1:]
		slices.SortStableFunc(hops, func(a, b Path) int {
			switch {
			case better(m, a, b, false):
				return -1
			case better(m, b, a, false):
				return 1
			}
			return 0
		})
		for _, p := range hops {
			if len(out) < n {
				out = append(out, p.Via)
				seen[p.Via] = true
			}
		}
	}
	type cand struct {
		m   string
		rtt float64
	}
	var cs []cand
	for _, m := range c.members {
		if seen[m] {
			continue
		}
		if s := c.Link(now, m); s.usable() {
			cs = append(cs, cand{m, s.RTTms})
		}
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		switch {
		case a.rtt < b.rtt:
			return -1
		case a.rtt > b.rtt:
			return 1
		}
		return 0
	})
	for _, x := range cs {
		if len(out) < n {
			out = append(out, x.m)
		}
	}
	return out
}

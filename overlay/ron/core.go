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
	"math/rand/v2"
	"slices"

	"github.com/peer-overlay/peer/internal/defaults"
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
	defaults.Set(&c.IntervalMs, 500)
	defaults.Set(&c.MinTimeoutMs, 200)
	defaults.Set(&c.FastIntervalMs, 100)
	defaults.Set(&c.RowStaleMs, 30000)
	defaults.Set(&c.RowRefreshMs, 20000)
	defaults.Set(&c.RowMinMs, 1000)
	defaults.Set(&c.RowBudgetBits, 8000)
	if c.Jitter <= 0 || c.Jitter >= 1 {
		c.Jitter = 0.2
	}
	defaults.Set(&c.DownAfter, 3)
	if c.Window <= 0 || c.Window > 64 {
		c.Window = 20
	}
	defaults.Set(&c.BudgetBits, 20000)
	defaults.Set(&c.ProbeBytes, 100)
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
	// The last probe counted lost (lostSeq, sent at lostSentAt), and the
	// round trip of the latest such probe that was answered after all
	// (late, at lateAt): see timeout.
	lostSeq    uint64
	lostSentAt int64
	late       float64
	lateAt     int64
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

	routeChanges uint64 // see RouteChanges
	rowAt        int64
	// linksDirty: a link's measurement may have changed since OwnRow
	// last compared the links with the row sent; rowCheckedAt is when it
	// last did. Between changes OwnRow's tick costs nothing.
	linksDirty   bool
	rowCheckedAt int64
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
	c.linksDirty = true
}

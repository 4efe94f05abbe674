package ron

// Path choice: the direct path and every one-hop path to a destination,
// compared per metric; the routes held, and the hysteresis that moves them.

import (
	"slices"
)

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
	return c.candidatesVia(now, dst, c.hops(now), nil)
}

// hop is a member that can be a first hop now: its link from us is usable
// and its row is fresh.
type hop struct {
	via   string
	first LinkState
	links map[string]LinkState // its row's links
}

// hops lists the members that can be first hops, in member order.
func (c *Core) hops(now int64) []hop {
	out := make([]hop, 0, len(c.members))
	stale := c.rowStale()
	for _, via := range c.members {
		r, ok := c.rows[via]
		if !ok || now-r.at > stale {
			continue
		}
		if first := c.Link(now, via); first.usable() {
			out = append(out, hop{via: via, first: first, links: r.row.Links})
		}
	}
	return out
}

// candidatesVia is candidates over first hops read once (Advance reads
// them once for every destination and metric, where reading them for each
// cost a 64-member group about 12,000 link estimates every 100 ms), appended
// to buf[:0].
func (c *Core) candidatesVia(now int64, dst string, hops []hop, buf []Path) []Path {
	direct := c.Link(now, dst)
	ok := direct.usable() && !c.links[dst].suspect
	out := append(buf[:0], Path{RTTms: direct.RTTms, Loss: direct.Loss, Tput: direct.Tput, OK: ok})
	for _, h := range hops {
		if h.via == dst {
			continue
		}
		second, ok := h.links[dst]
		if !ok || !second.usable() {
			continue
		}
		out = append(out, Path{
			Via:   h.via,
			RTTms: h.first.RTTms + second.RTTms,
			Loss:  1 - (1-h.first.Loss)*(1-second.Loss),
			Tput:  min(h.first.Tput, second.Tput),
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

// Route returns the path to use to dst for metric m now, and changes
// nothing: the route held, unless its path has stopped working, and then
// (or when no route is held yet) the best working path: the direct path
// unless a one-hop path is clearly better. A broken path is thus left at
// once; Advance records the move.
func (c *Core) Route(now int64, dst string, m Metric) Path {
	if m >= numMetrics || c.links[dst] == nil {
		return Path{}
	}
	cands := c.candidates(now, dst)
	if cur, held := c.routes[m][dst]; held {
		if p, ok := pathVia(cands, cur.via); ok && p.OK {
			return p
		}
	}
	return choose(m, cands)
}

// pathVia finds the candidate through via ("" for the direct path).
func pathVia(cands []Path, via string) (Path, bool) {
	for _, p := range cands {
		if p.Via == via {
			return p, true
		}
	}
	return Path{}, false
}

// best is the best of the candidates for m, at all.
func best(m Metric, cands []Path) Path {
	b := cands[0]
	for _, p := range cands[1:] {
		if better(m, p, b, false) {
			b = p
		}
	}
	return b
}

// choose is the path a route takes when it has none that works: the direct
// path unless it is down or the best path is clearly better.
func choose(m Metric, cands []Path) Path {
	direct, b := cands[0], best(m, cands)
	if !direct.OK || better(m, b, direct, true) {
		return b
	}
	return direct
}

// Advance takes one step of every route's hysteresis, for every member and
// metric; the binding calls it on its tick (every 100 ms or so). The direct
// path is used unless a one-hop path is clearly better; an indirect route
// returns to the direct path once that is nearly as good as the best. A
// working route moves only when the move has been called for at every step
// for holdMs (returnHoldMs back to the direct path), so that wobbling or
// flapping measurements do not move it; a route whose path stops working
// moves at once.
func (c *Core) Advance(now int64) {
	hops := c.hops(now)
	var cands []Path
	for _, dst := range c.members {
		cands = c.candidatesVia(now, dst, hops, cands)
		for m := range numMetrics {
			c.advance(now, dst, m, cands)
		}
	}
}

func (c *Core) advance(now int64, dst string, m Metric, cands []Path) {
	cur, held := c.routes[m][dst]
	curPath, found := pathVia(cands, cur.via)
	if !held || !found || !curPath.OK {
		// No route yet, or its path broke: choose now.
		via := choose(m, cands).Via
		if held && via != cur.via {
			c.routeChanges++
		}
		c.routes[m][dst] = route{via: via}
		return
	}
	direct, b := cands[0], best(m, cands)
	want := curPath
	switch {
	case curPath.Via != "" && direct.OK && (closeTo(m, direct, b) || !better(m, curPath, direct, true)):
		// Back to the direct path once it is nearly the best, or once the
		// indirect path held is no longer clearly better than it: noisy
		// estimates (throughput at sub-millisecond RTTs, say) that make
		// some other path look best now and then must not keep an
		// indirect route alive.
		want = direct
	case better(m, b, curPath, true):
		want = b
	}
	switch {
	case want.Via == cur.via:
		cur.pending = false
	case !cur.pending || cur.cand != want.Via:
		cur.pending, cur.cand, cur.candSince = true, want.Via, now
	case now-cur.candSince >= holdMs || want.Via == "" && now-cur.candSince >= returnHoldMs:
		cur = route{via: want.Via}
		c.routeChanges++
	}
	c.routes[m][dst] = cur
}

// RouteChanges counts the times a chosen route (any metric, any member)
// moved to another path.
func (c *Core) RouteChanges() uint64 { return c.routeChanges }

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

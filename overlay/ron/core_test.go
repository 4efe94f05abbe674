package ron

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// world answers one core's probes from a table of true link RTTs (ms);
// a negative RTT is a cut link. Time moves in 10 ms steps.
type world struct {
	c       *Core
	now     int64
	rtt     map[string]float64
	pending []answer
}

type answer struct {
	at  int64
	to  string
	seq uint64
}

func newWorld(self string, members []string, rtt map[string]float64) *world {
	w := &world{c: New(self, Config{Rand: rand.New(rand.NewPCG(7, 7))}), rtt: rtt}
	w.c.SetMembers(0, members)
	return w
}

func (w *world) run(ms int64) {
	for end := w.now + ms; w.now < end; w.now += 10 {
		rest := w.pending[:0]
		for _, a := range w.pending {
			if a.at <= w.now {
				w.c.ProbeAnswered(w.now, a.to, a.seq)
			} else {
				rest = append(rest, a)
			}
		}
		w.pending = rest
		for _, p := range w.c.Tick(w.now) {
			if r := w.rtt[p.To]; r >= 0 {
				w.pending = append(w.pending, answer{at: w.now + int64(r), to: p.To, seq: p.Seq})
			}
		}
	}
}

func TestProbingMeasuresAndDetectsDownLinks(t *testing.T) {
	w := newWorld("a", []string{"a", "b", "c"}, map[string]float64{"b": 20, "c": 40})
	w.run(3000)
	if s := w.c.Link(w.now, "b"); s.RTTms < 15 || s.RTTms > 35 || s.Loss != 0 || s.Down {
		t.Fatalf("link to b: %+v, want RTT about 20-30 ms (10 ms clock), no loss, up", s)
	}
	if s := w.c.Link(w.now, "c"); s.RTTms < 35 || s.RTTms > 55 {
		t.Fatalf("link to c: %+v, want RTT about 40-50 ms", s)
	}
	w.rtt["b"] = -1 // cut
	cut := w.now
	for !w.c.Link(w.now, "b").Down {
		w.run(10)
		if w.now-cut > 5000 {
			t.Fatal("a cut link was not marked down within 5 s")
		}
	}
	// An interval to the next probe, then DownAfter timeouts with fast
	// re-probes in between.
	if d := w.now - cut; d > 500+3*(200+100)+50 {
		t.Errorf("a cut link took %d ms to be marked down", d)
	}
	if s := w.c.Link(w.now, "b"); s.Loss == 0 {
		t.Errorf("a cut link shows no loss: %+v", s)
	}
	w.rtt["b"] = 20
	w.run(1500)
	if s := w.c.Link(w.now, "b"); s.Down {
		t.Fatalf("a healed link is still down: %+v", s)
	}
	if s := w.c.Link(w.now, "c"); s.Down || s.Loss != 0 {
		t.Fatalf("the cut of b touched c: %+v", s)
	}
}

func TestIntervalGrowsWithGroupWithinBudget(t *testing.T) {
	c := New("self", Config{})
	var ms []string
	for i := range 49 {
		ms = append(ms, fmt.Sprint("m", i))
	}
	c.SetMembers(0, ms[:3])
	if iv := c.Interval(); iv != 500 {
		t.Fatalf("interval with 3 others: %d ms, want the base 500", iv)
	}
	c.SetMembers(0, ms)
	iv := c.Interval()
	bits := 2 * 49 * 100 * 8 * 1000 / float64(iv)
	if bits > 20000 || iv <= 500 {
		t.Fatalf("interval with 49 others: %d ms, %.0f bit/s of probes; want within the 20000 bit/s budget", iv, bits)
	}
	// Over ten intervals every member is probed about ten times.
	seen := map[string]int{}
	for now := int64(0); now < 10*iv; now += 10 {
		for _, p := range c.Tick(now) {
			seen[p.To]++
			c.ProbeAnswered(now, p.To, p.Seq)
		}
	}
	for _, m := range ms {
		if seen[m] < 8 || seen[m] > 13 {
			t.Fatalf("member %s probed %d times in ten intervals", m, seen[m])
		}
	}
}

func TestStaleAndForeignAnswersIgnored(t *testing.T) {
	c := New("a", Config{})
	c.SetMembers(0, []string{"b"})
	var p Probe
	for now := int64(0); p.To == ""; now += 10 {
		if ps := c.Tick(now); len(ps) > 0 {
			p = ps[0]
		}
	}
	c.ProbeAnswered(300, "b", p.Seq+1) // not the outstanding probe
	c.ProbeAnswered(300, "x", p.Seq)   // not a member
	if s := c.Link(300, "b"); s.RTTms != 0 {
		t.Fatalf("a wrong answer was counted: %+v", s)
	}
}

// fixture is a core for "a" whose own links and whose members' rows are
// set directly (RTT ms; a negative RTT is a link that is down).
type fixture struct {
	t   *testing.T
	c   *Core
	now int64
}

// route steps the hysteresis, as the binding's tick does, then asks for
// the route.
func (f *fixture) route(now int64, dst string, m Metric) Path {
	f.c.Advance(now)
	return f.c.Route(now, dst, m)
}

func (w *world) route(now int64, dst string, m Metric) Path {
	w.c.Advance(now)
	return w.c.Route(now, dst, m)
}

func routed(t *testing.T, own map[string]float64, rows map[string]map[string]float64) *fixture {
	t.Helper()
	var members []string
	for m := range own {
		members = append(members, m)
	}
	f := &fixture{t: t, c: New("a", Config{})}
	f.c.SetMembers(0, members)
	f.set(own, rows)
	return f
}

func (f *fixture) set(own map[string]float64, rows map[string]map[string]float64) {
	f.t.Helper()
	for m, r := range own {
		l := f.c.links[m]
		if r < 0 {
			l.down, l.lossRun = true, 3
			continue
		}
		l.srtt, l.down, l.lossRun, l.count, l.history = r, false, 0, 1, 0
	}
	for owner, links := range rows {
		f.c.rowSeq++
		row := Row{Owner: owner, Seq: f.c.rowSeq, Links: map[string]LinkState{}}
		for d, r := range links {
			row.Links[d] = LinkState{RTTms: max(r, 0), Down: r < 0}
		}
		if !f.c.ApplyRow(f.now, row) {
			f.t.Fatalf("row of %s refused", owner)
		}
	}
}

func TestRouteDirectUnlessClearlyBetter(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 10, "c": 50, "d": 10},
		map[string]map[string]float64{"b": {"c": 35}, "d": {"c": 5}})
	// Latency: direct 50, via b 45 (not clearly better), via d 15.
	if p := f.route(f.now, "c", Latency); p.Via != "d" || !p.OK {
		t.Fatalf("latency route to c: %+v, want via d (15 ms against 50 direct)", p)
	}
	// Loss: all loss-free; the direct path stays.
	if p := f.route(f.now, "c", Loss); p.Via != "" {
		t.Fatalf("loss route to c: %+v, want direct", p)
	}
	f.now += 10
	f.set(nil, map[string]map[string]float64{"d": {"c": 40}})
	// via d is now 50, as good as direct: back to direct once that has
	// held for holdMs.
	if p := f.route(f.now, "c", Latency); p.Via != "d" {
		t.Fatalf("the route moved before the hold time: %+v", p)
	}
	f.now += holdMs
	if p := f.route(f.now, "c", Latency); p.Via != "" {
		t.Fatalf("latency route to c after d's link got slow: %+v, want direct", p)
	}
}

func TestRouteFailsOverAtOnceAndReturns(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 10, "c": 10, "d": 12},
		map[string]map[string]float64{"b": {"c": 10}, "d": {"c": 9}})
	for m := range numMetrics {
		if p := f.route(f.now, "c", m); p.Via != "" {
			t.Fatalf("%s route with a healthy direct link: %+v", m, p)
		}
	}
	f.set(map[string]float64{"c": -1}, nil)
	for m := range numMetrics {
		p := f.route(f.now, "c", m)
		if p.Via == "" || !p.OK {
			t.Fatalf("%s route with the direct link down: %+v, want through b or d", m, p)
		}
	}
	if p := f.route(f.now, "c", Latency); p.Via != "b" {
		t.Fatalf("latency failover went via %q, want b (20 ms against 21)", p.Via)
	}
	f.set(map[string]float64{"c": 10}, nil)
	for m := range numMetrics {
		f.route(f.now, "c", m)
	}
	// The heal is taken after the short return hold, not the full one.
	f.now += returnHoldMs / 2
	for m := range numMetrics {
		if p := f.route(f.now, "c", m); p.Via == "" {
			t.Fatalf("%s route back on the direct path %d ms after the heal, before the return hold", m, returnHoldMs/2)
		}
	}
	f.now += returnHoldMs / 2
	for m := range numMetrics {
		if p := f.route(f.now, "c", m); p.Via != "" {
			t.Fatalf("%s route %d ms after the direct link healed: %+v, want direct", m, returnHoldMs, p)
		}
	}
	if returnHoldMs >= holdMs {
		t.Fatalf("returnHoldMs %d is not shorter than holdMs %d", returnHoldMs, holdMs)
	}
	// Both the direct link and every intermediate's link down: no path.
	f.set(map[string]float64{"c": -1}, map[string]map[string]float64{"b": {"c": -1}, "d": {"c": -1}})
	if p := f.route(f.now, "c", Loss); p.OK {
		t.Fatalf("route with every path down: %+v", p)
	}
}

// Measurements that wobble around the margin do not make a route flap,
// and a steady, clear gain is still taken.
func TestRouteDoesNotFlap(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 10, "c": 24},
		map[string]map[string]float64{"b": {"c": 9}})
	rng := rand.New(rand.NewPCG(3, 3))
	wobble := func(lo, hi float64) float64 { return lo + rng.Float64()*(hi-lo) }
	switches, last := 0, f.route(f.now, "c", Latency).Via
	for range 2000 {
		f.now += 500
		// Via b: 16 to 20 ms; direct: 21 to 27 ms. Now and then via b
		// looks clearly better, and now and then nearly as good as direct.
		f.set(map[string]float64{"b": wobble(8, 10), "c": wobble(21, 27)},
			map[string]map[string]float64{"b": {"c": wobble(8, 10)}})
		if v := f.route(f.now, "c", Latency).Via; v != last {
			switches++
			last = v
		}
	}
	if switches > 10 {
		t.Fatalf("the latency route switched %d times in 2000 wobbling rounds", switches)
	}
	// Flapping input: the direct link alternates between good and bad at
	// every round. The route may move only once per hold time.
	switches = 0
	for i := range 200 {
		f.now += 500
		r := 10.0
		if i%2 == 0 {
			r = 60
		}
		f.set(map[string]float64{"b": 5, "c": r}, map[string]map[string]float64{"b": {"c": 5}})
		if v := f.route(f.now, "c", Latency).Via; v != last {
			switches++
			last = v
		}
	}
	if switches > 0 {
		t.Fatalf("a link flapping every 500 ms moved the route %d times in 100 s", switches)
	}
	f.set(map[string]float64{"b": 5, "c": 60}, map[string]map[string]float64{"b": {"c": 5}})
	f.route(f.now, "c", Latency)
	f.now += holdMs
	if v := f.route(f.now, "c", Latency).Via; v != "b" {
		t.Fatalf("a clear gain (10 ms against 60) was not taken: via %q", v)
	}
}

func TestRowsOwnAndForeign(t *testing.T) {
	w := newWorld("a", []string{"b", "c"}, map[string]float64{"b": 20, "c": 40})
	if _, ok := w.c.OwnRow(w.now); ok {
		t.Fatal("a row before any measurement")
	}
	w.run(2000)
	r, ok := w.c.OwnRow(w.now)
	if !ok || r.Owner != "a" || len(r.Links) != 2 {
		t.Fatalf("first row: %+v %v", r, ok)
	}
	w.run(2000)
	if r2, ok := w.c.OwnRow(w.now); ok {
		t.Fatalf("a row was sent again with nothing changed: %+v", r2)
	}
	w.rtt["c"] = -1
	w.run(3000)
	r3, ok := w.c.OwnRow(w.now)
	if !ok || !r3.Links["c"].Down || r3.Seq <= r.Seq {
		t.Fatalf("after c's link went down: %+v %v", r3, ok)
	}
	w.run(int64(w.c.cfg.RowRefreshMs))
	if _, ok := w.c.OwnRow(w.now); !ok {
		t.Fatal("no refresh after RowRefreshMs")
	}

	// Foreign rows: only members, only newer.
	if w.c.ApplyRow(w.now, Row{Owner: "x", Seq: 1}) {
		t.Fatal("a non-member's row was kept")
	}
	if w.c.ApplyRow(w.now, Row{Owner: "a", Seq: 99}) {
		t.Fatal("a row claiming to be ours was kept")
	}
	if !w.c.ApplyRow(w.now, Row{Owner: "b", Seq: 5}) || w.c.ApplyRow(w.now, Row{Owner: "b", Seq: 5}) || w.c.ApplyRow(w.now, Row{Owner: "b", Seq: 4}) {
		t.Fatal("row sequence numbers not respected")
	}
	w.c.SetMembers(w.now, []string{"c"})
	if w.c.ApplyRow(w.now, Row{Owner: "b", Seq: 6}) {
		t.Fatal("a row of a member that left was kept")
	}
	if p := w.route(w.now, "b", Latency); p.OK {
		t.Fatalf("a route to a member that left: %+v", p)
	}
}

func TestStaleRowsNotUsed(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 10, "c": -1},
		map[string]map[string]float64{"b": {"c": 10}})
	if p := f.route(f.now, "c", Latency); p.Via != "b" {
		t.Fatalf("route: %+v, want via b", p)
	}
	f.now += f.c.cfg.RowStaleMs + 1
	if p := f.route(f.now, "c", Latency); p.OK {
		t.Fatalf("a route through a stale row: %+v", p)
	}
}

func TestThroughputEstimate(t *testing.T) {
	if a, b := tputEstimate(10, 0, 20), tputEstimate(100, 0, 20); a <= b {
		t.Fatalf("a shorter RTT gives less throughput: %.0f vs %.0f", a, b)
	}
	if a, b := tputEstimate(10, 0.01, 20), tputEstimate(10, 0.2, 20); a <= b {
		t.Fatalf("more loss gives more throughput: %.0f vs %.0f", a, b)
	}
	c := New("a", Config{})
	c.SetMembers(0, []string{"b"})
	c.links["b"].srtt, c.links["b"].count = 10, 1
	before := c.Link(0, "b").Tput
	c.Observe(0, "b", 1<<30, 1000) // 1 GiB/s seen on real traffic
	if got := c.Link(0, "b").Tput; got < 1<<30 || got <= before {
		t.Fatalf("passive throughput not used: %.0f (estimate %.0f)", got, before)
	}
	if got := c.Link(c.cfg.RowStaleMs+1, "b").Tput; got != before {
		t.Fatalf("old passive throughput still used: %.0f", got)
	}
}

func TestRelaysMeasuredFirstThenNearest(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 30, "c": -1, "d": 5, "e": 10, "g": -1},
		map[string]map[string]float64{"b": {"c": 10}, "e": {"c": 50}})
	// Measured one-hop paths to c first, best first for latency: b (40
	// ms), then e (60 ms). Then the other members whose links are up,
	// nearest first: d. g is down and never offered.
	got := f.c.Relays(f.now, "c", 5, Latency)
	want := []string{"b", "e", "d"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("relays to c: %v, want %v", got, want)
	}
	if got := f.c.Relays(f.now, "c", 1, Latency); fmt.Sprint(got) != "[b]" {
		t.Fatalf("one relay to c: %v, want [b]", got)
	}
	// A peer outside the group: SOSR, every member with an up link,
	// nearest first.
	if got := f.c.Relays(f.now, "stranger", 5, Loss); fmt.Sprint(got) != "[d e b]" {
		t.Fatalf("relays to a non-member: %v, want [d e b]", got)
	}
}

// After a failover, the route returns to a healed direct path even when
// noisy estimates make a third path look best now and then.
func TestRouteReturnsDespiteANoisyThirdPath(t *testing.T) {
	f := routed(t, map[string]float64{"b": 10, "c": -1, "d": 2}, nil)
	row := func(owner string, l LinkState) {
		f.c.rowSeq++
		if !f.c.ApplyRow(f.now, Row{Owner: owner, Seq: f.c.rowSeq, Links: map[string]LinkState{"c": l}}) {
			t.Fatalf("row of %s refused", owner)
		}
	}
	row("b", LinkState{RTTms: 10, Tput: 2e6})
	row("d", LinkState{Down: true})
	if p := f.route(f.now, "c", Throughput); p.Via != "b" {
		t.Fatalf("failover went via %q, want b", p.Via)
	}
	// Healed: the direct path's estimate is far above b's 2 MB/s; d's
	// wobbles from 0.8 to 1.6 times the direct one, now and then clearly
	// better than it.
	f.set(map[string]float64{"c": 3}, nil)
	direct := f.c.Link(f.now, "c").Tput
	if direct < 4e6 {
		t.Fatalf("direct estimate %.0f B/s: the test wants it well above b's", direct)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	var v string
	for range 40 {
		f.now += 500
		f.set(map[string]float64{"c": 3, "b": 10, "d": 2}, nil)
		row("b", LinkState{RTTms: 10, Tput: 2e6})
		row("d", LinkState{RTTms: 2, Tput: direct * (0.8 + 0.8*rng.Float64())})
		v = f.route(f.now, "c", Throughput).Via
	}
	if v != "" {
		t.Fatalf("the route is via %q 20 s after the direct path healed, want direct", v)
	}
}

// Real traffic that fails moves the route off the direct path at once,
// before probes confirm anything; a probe answered after that clears it.
func TestSuspectLeavesDirectAtOnce(t *testing.T) {
	f := routed(t, map[string]float64{"b": 10, "c": 10}, map[string]map[string]float64{"b": {"c": 10}})
	if p := f.route(f.now, "c", Latency); p.Via != "" {
		t.Fatalf("route before: %+v", p)
	}
	f.now += 10
	f.c.Suspect(f.now, "c")
	if p := f.route(f.now, "c", Latency); p.Via != "b" || !p.OK {
		t.Fatalf("route right after a suspicion: %+v, want via b", p)
	}
	var probe *Probe
	for _, p := range f.c.Tick(f.now) {
		if p.To == "c" {
			probe = &p
		}
	}
	if probe == nil {
		t.Fatal("no probe to c right after the suspicion")
	}
	f.c.ProbeAnswered(f.now+5, "c", probe.Seq)
	if f.c.Suspected("c") {
		t.Fatal("still suspect after a probe sent since was answered")
	}
	f.now += 10
	f.route(f.now, "c", Latency)
	f.now += holdMs
	if p := f.route(f.now, "c", Latency); p.Via != "" {
		t.Fatalf("route after the suspicion cleared: %+v, want direct", p)
	}
}

// Measurements that wobble under load do not flood the group with rows:
// past the first measurement of each link, rows go out at most once per
// row interval, which grows with the group to stay within the budget.
func TestRowsStayWithinBudget(t *testing.T) {
	var members []string
	rtt := map[string]float64{}
	for i := range 50 {
		m := fmt.Sprintf("m%02d", i)
		members = append(members, m)
		rtt[m] = 20
	}
	w := newWorld("m00", members, rtt)
	rng := rand.New(rand.NewPCG(9, 9))
	rows := 0
	for range 600 { // 60 s
		for m := range rtt {
			rtt[m] = 10 + rng.Float64()*60
		}
		w.run(100)
		if _, ok := w.c.OwnRow(w.now); ok {
			rows++
		}
	}
	ri := w.c.RowInterval()
	if ri < 20000 {
		t.Fatalf("row interval with 50 members: %d ms, want tens of seconds", ri)
	}
	// The first row, rows while links get their first measurement (the
	// first probes spread over one probe interval), then one per interval.
	if limit := 1 + int(w.c.Interval()/100) + int(60000/ri) + 1; rows > limit {
		t.Fatalf("%d rows in 60 s of wobbling RTTs, want at most %d", rows, limit)
	}
}

// Asking for a route changes nothing: however often Route is called, only
// Advance moves a route, so that displaying routes cannot change them.
func TestRouteIsAPureQuery(t *testing.T) {
	f := routed(t,
		map[string]float64{"b": 10, "c": 10},
		map[string]map[string]float64{"b": {"c": 10}})
	f.c.Advance(f.now)
	if p := f.c.Route(f.now, "c", Latency); p.Via != "" {
		t.Fatalf("route with a good direct link: %+v, want direct", p)
	}
	// The direct link slows to 50 ms: b's path (20 ms) is now clearly
	// better; asked for over and over across two holds, the route must
	// stay put.
	f.set(map[string]float64{"c": 50}, nil)
	for range 2 * holdMs / 10 {
		f.now += 10
		if p := f.c.Route(f.now, "c", Latency); p.Via != "" {
			t.Fatalf("Route moved the route at %d ms without an Advance: %+v", f.now, p)
		}
	}
	// Stepped, it moves once the hold has passed.
	start := f.now
	for f.now-start <= holdMs {
		f.now += 100
		f.c.Advance(f.now)
	}
	if p := f.c.Route(f.now, "c", Latency); p.Via != "b" {
		t.Fatalf("route after a hold of Advance steps: %+v, want via b", p)
	}
}

// A change that must wait out the row interval is still sent once the
// interval is over, with OwnRow called every tick meanwhile (and skipping
// its comparison on the ticks where no probe changed anything).
func TestRowChangeSentAfterTheInterval(t *testing.T) {
	w := newWorld("a", []string{"b"}, map[string]float64{"b": 20})
	w.run(3000)
	first, ok := w.c.OwnRow(w.now)
	if !ok {
		t.Fatal("no first row")
	}
	firstAt := w.now
	w.rtt["b"] = 200 // a noticeable change, not an outage
	var got *Row
	for end := w.now + w.c.cfg.RowRefreshMs - 10; w.now < end && got == nil; {
		w.run(10)
		if r, ok := w.c.OwnRow(w.now); ok {
			got = &r
		}
	}
	if got == nil || got.Seq <= first.Seq || got.Links["b"].RTTms < 40 {
		t.Fatalf("the RTT change was not sent before the refresh: %+v", got)
	}
	if at := w.now - firstAt; at < w.c.RowInterval() {
		t.Fatalf("the change went out %d ms after the first row, inside the %d ms row interval", at, w.c.RowInterval())
	}
}

// candidates gives the same paths as reading every first hop afresh for
// each destination, as it did before the hops were read once.
func TestCandidatesMatchAPerDestinationReading(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var members []string
	rtt := map[string]float64{}
	for i := range 12 {
		m := fmt.Sprintf("m%02d", i)
		members = append(members, m)
		rtt[m] = 5 + rng.Float64()*50
	}
	rtt["m03"] = -1 // a cut link
	w := newWorld("self", members, rtt)
	w.run(5000)
	for i, o := range members {
		links := map[string]LinkState{}
		for _, d := range members {
			if d != o && rng.IntN(4) > 0 {
				links[d] = LinkState{RTTms: 1 + rng.Float64()*80, Loss: rng.Float64() * 0.2, Down: rng.IntN(10) == 0}
			}
		}
		if i != 5 { // m05 sends no row
			w.c.ApplyRow(w.now, Row{Owner: o, Seq: 1, Links: links})
		}
	}
	for _, dst := range members {
		got := w.c.candidates(w.now, dst)
		want := naiveCandidates(w.c, w.now, dst)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("candidates to %s:\n got %v\nwant %v", dst, got, want)
		}
	}
}

func naiveCandidates(c *Core, now int64, dst string) []Path {
	direct := c.Link(now, dst)
	out := []Path{{RTTms: direct.RTTms, Loss: direct.Loss, Tput: direct.Tput, OK: direct.usable() && !c.links[dst].suspect}}
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
		out = append(out, Path{Via: via, RTTms: first.RTTms + second.RTTms,
			Loss: 1 - (1-first.Loss)*(1-second.Loss), Tput: min(first.Tput, second.Tput), OK: true})
	}
	return out
}

// BenchmarkRouterTick64 is the RON work of one 10 ms tick of the binding
// for a 64-member group: probes due, the own row check, and a tenth of an
// Advance (it runs every 100 ms).
func BenchmarkRouterTick64(b *testing.B) {
	var members []string
	rtt := map[string]float64{}
	for i := range 63 {
		m := fmt.Sprintf("m%02d", i)
		members = append(members, m)
		rtt[m] = 1
	}
	w := newWorld("self", members, rtt)
	w.run(5000)
	for _, o := range members {
		links := map[string]LinkState{}
		for _, d := range members {
			if d != o {
				links[d] = LinkState{RTTms: 1}
			}
		}
		w.c.ApplyRow(w.now, Row{Owner: o, Seq: 1, Links: links})
	}
	b.ResetTimer()
	for i := range b.N {
		w.run(10)
		w.c.OwnRow(w.now)
		if i%10 == 0 {
			w.c.Advance(w.now)
		}
	}
}

// A link whose answers turn slow (a busy machine: 400 ms where they took
// 1 ms) stays up: the first late answer stretches the timeout, so the
// link is not marked down and up again, each time a row to every member.
// A link that stops answering still goes down.
func TestSlowAnswersStretchTheTimeoutInsteadOfFlapping(t *testing.T) {
	w := newWorld("a", []string{"b"}, map[string]float64{"b": 1})
	w.run(5000)
	w.rtt["b"] = 400
	for range 1000 { // 10 s
		w.run(10)
		if w.c.Link(w.now, "b").Down {
			t.Fatalf("the link went down %d ms into answers taking 400 ms", w.now-5000)
		}
	}
	if s := w.c.Link(w.now, "b"); s.RTTms < 200 {
		t.Fatalf("RTT %.1f ms after 10 s of 400 ms answers", s.RTTms)
	}
	w.rtt["b"] = -1
	w.run(10000)
	if !w.c.Link(w.now, "b").Down {
		t.Fatal("a link that stopped answering is not down after 10 s")
	}
}

// The first answer after an outage says the link is back, but its round
// trip (a probe sent during the cut, answered once it healed) is the
// outage's, not the link's: the estimate from before it stands.
func TestAnswerAfterAnOutageKeepsTheEstimate(t *testing.T) {
	c := New("a", Config{})
	c.SetMembers(0, []string{"c"})
	now := int64(0)
	probe := func() Probe {
		t.Helper()
		for range 100 {
			for _, p := range c.Tick(now) {
				if p.To == "c" {
					return p
				}
			}
			now += 10
		}
		t.Fatal("no probe to c within 1 s")
		return Probe{}
	}
	for range 5 {
		p := probe()
		c.ProbeAnswered(now, "c", p.Seq) // a clock in ms: 0 reads as 0.05
	}
	before := c.Link(now, "c").RTTms
	for !c.Link(now, "c").Down {
		probe()
		now += 1000 // unanswered
	}
	p := probe()
	now += 150
	c.ProbeAnswered(now, "c", p.Seq)
	l := c.Link(now, "c")
	if l.Down || l.RTTms != before {
		t.Fatalf("after the outage: %+v, want up with the estimate from before it (%.2f ms)", l, before)
	}
	p = probe()
	now += 2
	c.ProbeAnswered(now, "c", p.Seq)
	if l := c.Link(now, "c"); l.RTTms <= before {
		t.Fatalf("the next answer (2 ms) was not taken: %+v, before %.2f ms", l, before)
	}
}

// Below a millisecond, round trips are the hosts' noise: a one-hop path
// that reads 0.2 ms is not taken for throughput over a direct one of
// 0.3 ms. Above it, the round trip still decides.
func TestSubMillisecondPathsTieOnThroughput(t *testing.T) {
	for _, tc := range []struct {
		direct, first, second float64
		want                  string
	}{
		{direct: 0.3, first: 0.1, second: 0.1, want: ""},
		{direct: 0.9, first: 0.05, second: 0.05, want: ""},
		{direct: 30, first: 5, second: 5, want: "b"},
	} {
		f := routed(t, map[string]float64{"b": tc.first, "c": tc.direct}, nil)
		var p Path
		for range 30 {
			f.now += 500
			f.set(map[string]float64{"b": tc.first, "c": tc.direct}, nil)
			f.c.rowSeq++
			row := Row{Owner: "b", Seq: f.c.rowSeq, Links: map[string]LinkState{
				"c": {RTTms: tc.second, Tput: tputEstimate(tc.second, 0, f.c.cfg.Window)},
			}}
			if !f.c.ApplyRow(f.now, row) {
				t.Fatal("row of b refused")
			}
			p = f.route(f.now, "c", Throughput)
		}
		if p.Via != tc.want {
			t.Errorf("direct %.2f ms, via b %.2f+%.2f ms: throughput route via %q, want %q",
				tc.direct, tc.first, tc.second, p.Via, tc.want)
		}
	}
}

package nat

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// good is an eligible candidate of middling resources: score
// 11 (a day up) + 3 (4 cores) + 5 (4 GiB) + 4 (8 MiB/s) = 23.
func good(id string) Candidate {
	return Candidate{ID: id, PublicConfirmed: true, UptimeSec: 86400, Cores: 4, MemMiB: 4096, UploadBps: 8 << 20}
}

func TestSeats(t *testing.T) {
	for _, c := range []struct{ n, k int }{
		{0, 2}, {1, 2}, {4, 2}, {5, 3}, {9, 3}, {10, 4}, {100, 10}, {225, 15}, {226, 16}, {10000, 16},
	} {
		if got := Seats(c.n, ElectionParams{}); got != c.k {
			t.Errorf("Seats(%d) = %d, want %d", c.n, got, c.k)
		}
	}
	prev := 0
	for n := range 1000 {
		k := Seats(n, ElectionParams{})
		if k < prev || k < 2 || k > 16 {
			t.Fatalf("Seats(%d) = %d after %d: must grow with n within [2, 16]", n, k, prev)
		}
		prev = k
	}
	if got := Seats(10, ElectionParams{MinSeats: 5, MaxSeats: 6}); got != 5 {
		t.Errorf("Seats(10) with MinSeats 5 = %d", got)
	}
	// k grows with n in Elect too.
	for _, n := range []int{4, 16, 64, 400} {
		var cs []Candidate
		for i := range n {
			cs = append(cs, good(fmt.Sprintf("p%03d", i)))
		}
		if got := len(Elect(cs, ElectionParams{})); got != Seats(n, ElectionParams{}) {
			t.Errorf("group of %d elects %d, want %d", n, got, Seats(n, ElectionParams{}))
		}
	}
}

func TestEligible(t *testing.T) {
	mod := func(f func(*Candidate)) Candidate { c := good("x"); f(&c); return c }
	for _, c := range []struct {
		name string
		c    Candidate
		want bool
	}{
		{"good", good("x"), true},
		{"not dialed back", mod(func(c *Candidate) { c.PublicConfirmed = false }), false},
		{"59 s up", mod(func(c *Candidate) { c.UptimeSec = 59 }), false},
		{"60 s up", mod(func(c *Candidate) { c.UptimeSec = 60 }), true},
		{"no cores", mod(func(c *Candidate) { c.Cores = 0 }), false},
		{"255 MiB", mod(func(c *Candidate) { c.MemMiB = 255 }), false},
		{"256 MiB", mod(func(c *Candidate) { c.MemMiB = 256 }), true},
		{"uncapped", mod(func(c *Candidate) { c.UploadBps = 0 }), true},
		{"capped below 1 MiB/s", mod(func(c *Candidate) { c.UploadBps = 1<<20 - 1 }), false},
		{"capped at 1 MiB/s", mod(func(c *Candidate) { c.UploadBps = 1 << 20 }), true},
		{"negative upload", mod(func(c *Candidate) { c.UploadBps = -1 }), false},
	} {
		if got := Eligible(c.c, ElectionParams{}); got != c.want {
			t.Errorf("%s: Eligible = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestScoreBuckets(t *testing.T) {
	base := good("x")
	if s := Score(base); s != 23 {
		t.Fatalf("Score(good) = %d, want 23", s)
	}
	jitter := base
	jitter.UptimeSec += 3600 // 25 h: still bucket 11
	jitter.MemMiB = 8191     // still bucket 5
	jitter.UploadBps = 15<<20 + 12345
	if Score(jitter) != Score(base) {
		t.Fatalf("jitter within buckets moved the score: %d vs %d", Score(jitter), Score(base))
	}
	doubled := base
	doubled.Cores = 8
	if Score(doubled) != Score(base)+1 {
		t.Fatalf("doubling cores: %d, want %d", Score(doubled), Score(base)+1)
	}
	uncapped := base
	uncapped.UploadBps = 0
	huge := base
	huge.UploadBps = 1 << 40
	if Score(uncapped) != Score(huge) || Score(uncapped) <= Score(base) {
		t.Fatalf("uncapped %d, huge cap %d, 8 MiB/s %d", Score(uncapped), Score(huge), Score(base))
	}
}

// group is 20 members: a..t with scores falling from a; the last five are
// not public. Nobody is an incumbent.
func group() []Candidate {
	var cs []Candidate
	for i := range 20 {
		c := good(string(rune('a' + i)))
		c.UptimeSec = 86400 >> (i / 3) // three to a bucket
		c.PublicConfirmed = i < 15
		cs = append(cs, c)
	}
	return cs
}

func TestElectOrderIndependent(t *testing.T) {
	cs := group()
	cs[3].Incumbent, cs[9].Incumbent = true, true
	want := Elect(cs, ElectionParams{})
	if len(want) != 5 || !slices.IsSorted(want) {
		t.Fatalf("elected %v, want 5 sorted IDs", want)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		if got := Elect(cs, ElectionParams{}); !slices.Equal(got, want) {
			t.Fatalf("order changed the result: %v, want %v", got, want)
		}
	}
}

func TestElectTiesByID(t *testing.T) {
	cs := []Candidate{good("d"), good("b"), good("c"), good("a")}
	if got := Elect(cs, ElectionParams{}); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("equal scores: elected %v, want [a b]", got)
	}
}

func TestElectNonPublicNeverElected(t *testing.T) {
	liar := Candidate{ID: "0liar", UptimeSec: 1 << 30, Cores: 1024, MemMiB: 1 << 20, Incumbent: true}
	cs := []Candidate{liar, good("b")}
	if got := Elect(cs, ElectionParams{}); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("elected %v, want only the public b", got)
	}
	if got := Elect([]Candidate{liar}, ElectionParams{}); len(got) != 0 {
		t.Fatalf("a lone non-public peer was elected: %v", got)
	}
	// Listing it twice, once as public, does not help it either.
	dup := liar
	dup.PublicConfirmed = true
	if got := Elect([]Candidate{dup, liar, good("b")}, ElectionParams{}); slices.Contains(got, "0liar") {
		t.Fatalf("a doubled entry got a non-public peer elected: %v", got)
	}
}

func TestElectIncumbentLosesEligibility(t *testing.T) {
	cs := group()
	elected := Elect(cs, ElectionParams{})
	mark(cs, elected)
	gone := elected[0]
	for i := range cs {
		if cs[i].ID == gone {
			cs[i].PublicConfirmed = false
		}
	}
	got := Elect(cs, ElectionParams{})
	if slices.Contains(got, gone) || len(got) != len(elected) {
		t.Fatalf("after %s lost its public address: elected %v (before %v)", gone, got, elected)
	}
	if changed := diff(elected, got); changed != 1 {
		t.Fatalf("%d seats changed, want exactly the lost one", changed)
	}
}

func TestElectHysteresis(t *testing.T) {
	inc := good("z") // score 23, incumbent
	inc.Incumbent = true
	other := good("y")
	other.Incumbent = true
	challenger := good("a") // lower ID: would win any tie
	challenger.Cores = 8    // +1 bucket
	cs := []Candidate{inc, other, challenger}
	if got := Elect(cs, ElectionParams{}); !slices.Equal(got, []string{"y", "z"}) {
		t.Fatalf("a challenger one bucket better took a seat: %v", got)
	}
	cs[2].Cores = 16 // +2 buckets
	if got := Elect(cs, ElectionParams{}); !slices.Equal(got, []string{"a", "y"}) {
		t.Fatalf("a challenger two buckets better: %v, want [a y] (z loses on ID)", got)
	}
	// Without incumbents the same inputs rank purely by score.
	cs[0].Incumbent, cs[1].Incumbent, cs[2].Cores = false, false, 8
	if got := Elect(cs, ElectionParams{}); !slices.Equal(got, []string{"a", "y"}) {
		t.Fatalf("no incumbents: %v, want [a y]", got)
	}
}

func TestElectOneReplacementPerElection(t *testing.T) {
	var cs []Candidate
	for _, id := range []string{"m", "n"} {
		c := good(id)
		c.Incumbent = true
		cs = append(cs, c)
	}
	for _, id := range []string{"a", "b"} {
		c := good(id)
		c.Cores, c.MemMiB, c.UploadBps = 64, 1<<15, 0 // +4 +3 +4 buckets
		cs = append(cs, c)
	}
	first := Elect(cs, ElectionParams{})
	if diff([]string{"m", "n"}, first) != 1 {
		t.Fatalf("first election: %v, want exactly one of m, n replaced", first)
	}
	if !slices.Equal(first, []string{"a", "m"}) {
		t.Fatalf("first election: %v, want the best challenger a to take the worst seat n", first)
	}
	// Before the change has spread, the same inputs give the same answer.
	if again := Elect(cs, ElectionParams{}); !slices.Equal(again, first) {
		t.Fatalf("same inputs, other answer: %v vs %v", again, first)
	}
	mark(cs, first)
	if second := Elect(cs, ElectionParams{}); !slices.Equal(second, []string{"a", "b"}) {
		t.Fatalf("second election: %v, want [a b]", second)
	}
}

func TestElectShrinkingK(t *testing.T) {
	// Ten members elect 4; after six leave, k is 2 and the best two of the
	// three incumbents left stay.
	var cs []Candidate
	for i := range 10 {
		c := good(fmt.Sprintf("p%d", i))
		c.UptimeSec = 86400 >> i
		cs = append(cs, c)
	}
	first := Elect(cs, ElectionParams{})
	if !slices.Equal(first, []string{"p0", "p1", "p2", "p3"}) {
		t.Fatalf("elected %v", first)
	}
	mark(cs, first)
	small := []Candidate{cs[3], cs[2], cs[9], cs[1]}
	if got := Elect(small, ElectionParams{}); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("after the group shrank: %v, want [p1 p2]", got)
	}
}

func TestElectNoFlapOnJitter(t *testing.T) {
	cs := group()
	// f climbs to 23 and takes a seat; g and h reach 22, the worst seat's
	// score, one bucket short of the margin.
	for i := 5; i < 8; i++ {
		cs[i].Cores = 8
	}
	want := Elect(cs, ElectionParams{})
	if !slices.Equal(want, []string{"a", "b", "c", "d", "f"}) {
		t.Fatalf("elected %v", want)
	}
	mark(cs, want)
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 1000 {
		jittered := slices.Clone(cs)
		for i := range jittered {
			c := &jittered[i]
			// Within each bucket: uptime up to 5 minutes more, memory in
			// [4096, 8191] MiB, upload in [8, 16) MiB/s.
			c.UptimeSec += r.Int64N(300)
			c.MemMiB = 4096 + r.IntN(4096)
			c.UploadBps = 8<<20 + r.Int64N(8<<20)
		}
		// g and h wobble across a bucket edge (8191/8192 MiB): 22 or 23,
		// at most one bucket above the worst seat.
		for _, i := range []int{6, 7} {
			jittered[i].MemMiB = 8191 + r.IntN(2)
		}
		if got := Elect(jittered, ElectionParams{}); !slices.Equal(got, want) {
			t.Fatalf("round %d: jitter changed the set to %v from %v", round, got, want)
		}
	}
}

// TestElectHourOfTicks runs an election every second for an hour over a
// group whose only change is that uptime ticks. Young, well-resourced
// members climb past the old ones' score, which without incumbency would
// reorder the seats several times; with it the set changes at most once.
func TestElectHourOfTicks(t *testing.T) {
	build := func(youngStart []int64) []Candidate {
		var cs []Candidate
		for i := range 5 { // old: score 23 and steady
			cs = append(cs, good(fmt.Sprintf("o%d", i)))
		}
		for i, up := range youngStart { // young: 18 + uptime bucket
			cs = append(cs, Candidate{ID: fmt.Sprintf("a%d", i), PublicConfirmed: true, UptimeSec: up, Cores: 32, MemMiB: 16384, UploadBps: 16 << 20})
		}
		for i := len(cs); i < 20; i++ { // fillers: score 14
			cs = append(cs, Candidate{ID: fmt.Sprintf("f%d", i), PublicConfirmed: true, UptimeSec: 86400, Cores: 1, MemMiB: 256, UploadBps: 1 << 20})
		}
		return cs
	}
	run := func(cs []Candidate, incumbency bool) (changes int) {
		var prev []string
		for tick := range 3600 {
			got := Elect(cs, ElectionParams{})
			if tick > 0 && !slices.Equal(got, prev) {
				changes++
			}
			prev = got
			for i := range cs {
				cs[i].UptimeSec++
			}
			if incumbency {
				mark(cs, got)
			}
		}
		return changes
	}
	for _, c := range []struct {
		name  string
		young []int64
		max   int
	}{
		// The young reach 23 (bucket 5) at ticks 760-900 and 24 before the
		// hour ends: one bucket past the old, never two.
		{"young end one bucket ahead", []int64{60, 120, 200}, 0},
		// a2 reaches 25 (bucket 7, 64 min) at tick 3440: one replacement.
		{"one young ends two buckets ahead", []int64{60, 120, 400}, 1},
	} {
		if churn := run(build(c.young), false); churn < 2 {
			t.Fatalf("%s: without incumbency the set changed %d times; the scenario does not test hysteresis", c.name, churn)
		}
		if changes := run(build(c.young), true); changes > c.max {
			t.Errorf("%s: the set changed %d times in an hour, want at most %d", c.name, changes, c.max)
		}
	}
}

// mark sets Incumbent on the elected and clears it on the others, as the
// metadata would after the election has spread.
func mark(cs []Candidate, elected []string) {
	for i := range cs {
		cs[i].Incumbent = slices.Contains(elected, cs[i].ID)
	}
}

// diff counts the IDs of a missing from b.
func diff(a, b []string) int {
	n := 0
	for _, id := range a {
		if !slices.Contains(b, id) {
			n++
		}
	}
	return n
}

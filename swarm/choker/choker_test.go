package choker

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func newChoker(seed uint64) *Choker {
	return New(Config{Rand: rand.New(rand.NewPCG(seed, 0))})
}

// swarm returns n interested peers p00..p(n-1), connected long ago, active,
// with DownRate rising with the index and UpRate falling.
func swarm(n int, now int64) []Peer {
	ps := make([]Peer, n)
	for i := range ps {
		ps[i] = Peer{
			ID:         fmt.Sprintf("p%02d", i),
			Interested: true,
			DownRate:   float64(100 * (i + 1)),
			UpRate:     float64(100 * (n - i)),
			LastBlock:  now - 1000,
			Connected:  -1_000_000,
		}
	}
	return ps
}

func ids(ps []Peer, idx ...int) map[string]bool {
	m := map[string]bool{}
	for _, i := range idx {
		m[ps[i].ID] = true
	}
	return m
}

func sorted(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

func TestTopFour(t *testing.T) {
	const now = 1_000_000
	ps := swarm(8, now)
	c := newChoker(1)
	got := c.Decide(now, ps, false, 0)
	if want := ids(ps, 4, 5, 6, 7); !maps.Equal(c.regular, want) {
		t.Fatalf("leeching: regular %v, want %v", sorted(c.regular), sorted(want))
	}
	if len(got) != 5 || c.optimistic == "" || !got[c.optimistic] || c.regular[c.optimistic] {
		t.Fatalf("leeching: unchoked %v, optimistic %q", sorted(got), c.optimistic)
	}

	c = newChoker(1)
	c.Decide(now, ps, true, 0)
	if want := ids(ps, 0, 1, 2, 3); !maps.Equal(c.regular, want) {
		t.Fatalf("seeding: regular %v, want %v", sorted(c.regular), sorted(want))
	}
}

func TestOptimisticRotation(t *testing.T) {
	ps := swarm(8, 0)
	c := newChoker(2)
	c.Decide(0, ps, false, 0)
	opt := c.optimistic
	if opt == "" {
		t.Fatal("no optimistic unchoke")
	}
	for _, now := range []int64{10_000, 20_000, 25_000} {
		for i := range ps {
			ps[i].LastBlock = now
		}
		if got := c.Decide(now, ps, false, 0); c.optimistic != opt || !got[opt] {
			t.Fatalf("at %d ms the optimistic unchoke changed from %s to %s", now, opt, c.optimistic)
		}
	}
	for i := range ps {
		ps[i].LastBlock = 30_000
	}
	c.Decide(30_000, ps, false, 0)
	if c.optimistic == opt || c.optimistic == "" || c.regular[c.optimistic] {
		t.Fatalf("at 30 s the optimistic unchoke did not rotate: %s -> %s", opt, c.optimistic)
	}
	// It is replaced at once when it loses interest.
	opt = c.optimistic
	for i := range ps {
		if ps[i].ID == opt {
			ps[i].Interested = false
		}
	}
	got := c.Decide(31_000, ps, false, 0)
	if got[opt] || c.optimistic == "" || c.optimistic == opt {
		t.Fatalf("uninterested optimistic %s kept (now %s)", opt, c.optimistic)
	}
}

func TestOptimisticFavoursNewPeers(t *testing.T) {
	const now, trials = 1_000_000, 4000
	newWins := 0
	for seed := uint64(0); seed < trials; seed++ {
		ps := swarm(8, now)
		for i := 0; i < 4; i++ {
			ps[i].DownRate = 0 // candidates for the optimistic slot
		}
		ps[2].Connected = now - 1000 // the one new peer
		c := newChoker(seed)
		c.Decide(now, ps, false, 0)
		if c.optimistic == ps[2].ID {
			newWins++
		}
	}
	// Weight 3 against 1+1+1: expected 50%; uniform would give 25%.
	if f := float64(newWins) / trials; f < 0.45 || f > 0.55 {
		t.Fatalf("new peer drawn %.1f%% of the time, want about 50%%", 100*f)
	}
}

func TestExtraSlots(t *testing.T) {
	ps := swarm(12, 0)
	c := newChoker(3)
	steps := []struct {
		spare   float64
		regular int
	}{
		{0.5, 8},  // 4 + ceil(0.5*8)
		{0.5, 10}, // + ceil(0.5*4 left)
		{0.05, 10},
		{0.2, 11}, // + ceil(0.2*2 left)
		{0.01, 10},
		{0, 9},
		{0, 8},
	}
	for k, s := range steps {
		now := int64(k) * 10_000
		for i := range ps {
			ps[i].LastBlock = now
		}
		got := c.Decide(now, ps, false, s.spare)
		if len(c.regular) != s.regular {
			t.Fatalf("round %d (spare %v): %d regular+extra, want %d", k, s.spare, len(c.regular), s.regular)
		}
		// Extra slots follow the regular order: the fastest peers.
		for i := 12 - s.regular; i < 12; i++ {
			if !c.regular[ps[i].ID] {
				t.Fatalf("round %d: %s (rank %d) has no slot: %v", k, ps[i].ID, 12-i, sorted(c.regular))
			}
		}
		if want := min(s.regular+1, 12); len(got) != want {
			t.Fatalf("round %d: %d unchoked, want %d", k, len(got), want)
		}
	}
	for k := 0; k < 10; k++ {
		c.Decide(int64(len(steps)+k)*10_000, ps, false, 0)
	}
	if len(c.regular) != 4 {
		t.Fatalf("saturated upload: %d regular, want 4", len(c.regular))
	}
}

func TestSnubbed(t *testing.T) {
	ps := swarm(6, 0)
	c := newChoker(4)
	c.Decide(0, ps, false, 0)
	top := ps[5].ID
	if !c.regular[top] {
		t.Fatalf("fastest peer not unchoked: %v", sorted(c.regular))
	}
	const now = 70_000
	for i := range ps {
		ps[i].LastBlock = now - 1000
	}
	ps[5].LastBlock = 5_000 // nothing for 65 s, rate not yet decayed
	c.Decide(now, ps, false, 0)
	if c.regular[top] {
		t.Fatalf("snubbed peer kept its regular slot: %v", sorted(c.regular))
	}
	if want := ids(ps, 1, 2, 3, 4); !maps.Equal(c.regular, want) {
		t.Fatalf("regular %v, want %v", sorted(c.regular), sorted(want))
	}

	// Never sent anything since connecting 61 s ago: snubbed as well.
	c = newChoker(4)
	ps = swarm(6, 0)
	ps[5].LastBlock, ps[5].Connected = 0, 0
	c.Decide(0, ps, false, 0)
	for i := 0; i < 5; i++ {
		ps[i].LastBlock = 60_000
	}
	c.Decide(61_000, ps, false, 0)
	if c.regular[top] {
		t.Fatal("silent peer kept its regular slot")
	}

	// Snubbed peers still get a regular slot when nothing else is interested.
	for i := 0; i < 5; i++ {
		ps[i].Interested = false
	}
	c.Decide(122_000, ps, false, 0)
	if !c.regular[top] {
		t.Fatal("the only interested peer got no regular slot")
	}

	// No snubbing when seeding: nobody owes us data.
	c = newChoker(4)
	ps = swarm(6, 0)
	ps[0].UpRate = 1e9
	c.Decide(0, ps, true, 0)
	ps[0].LastBlock = 0
	c.Decide(100_000, ps, true, 0)
	if !c.regular[ps[0].ID] {
		t.Fatal("seeding: fastest upload lost its slot")
	}
}

func TestUninterestedNeverUnchoked(t *testing.T) {
	ps := swarm(10, 0)
	for i := 5; i < 10; i++ {
		ps[i].Interested = false // the fastest ones
	}
	c := newChoker(5)
	for k := int64(0); k < 20; k++ {
		got := c.Decide(k*10_000, ps, k%2 == 0, 0.5)
		for i := 5; i < 10; i++ {
			if got[ps[i].ID] {
				t.Fatalf("round %d: uninterested %s unchoked", k, ps[i].ID)
			}
		}
		if len(got) != 5 {
			t.Fatalf("round %d: %d unchoked, want the 5 interested", k, len(got))
		}
	}
}

func TestInterimCallFillsFreeSlots(t *testing.T) {
	ps := swarm(8, 0)
	c := newChoker(6)
	c.Decide(0, ps, false, 0)
	opt := c.optimistic
	// A regular peer leaves 3 s later; rates have moved but the round is not due.
	gone := ps[7].ID
	ps = ps[:7]
	ps[0].DownRate = 1e9
	got := c.Decide(3_000, ps, false, 0)
	if len(c.regular) != 4 || got[gone] || c.optimistic != opt {
		t.Fatalf("interim: regular %v, optimistic %s (was %s)", sorted(c.regular), c.optimistic, opt)
	}
	for _, i := range []int{4, 5, 6} {
		if !c.regular[ps[i].ID] {
			t.Fatalf("interim: %s lost its slot: %v", ps[i].ID, sorted(c.regular))
		}
	}
	// The next full round reranks.
	c.Decide(10_000, ps, false, 0)
	if !c.regular[ps[0].ID] {
		t.Fatalf("full round ignored the new rates: %v", sorted(c.regular))
	}
}

func TestDeterminism(t *testing.T) {
	run := func(seed uint64, shuffle bool) []string {
		rng := rand.New(rand.NewPCG(99, 0)) // inputs
		c := newChoker(seed)
		var log []string
		ps := swarm(15, 0)
		for k := int64(0); k < 50; k++ {
			now := k * 5_000
			for i := range ps {
				ps[i].Interested = rng.IntN(4) != 0
				ps[i].DownRate = float64(rng.IntN(3) * 1000)
				ps[i].UpRate = float64(rng.IntN(3) * 1000)
				if rng.IntN(2) == 0 {
					ps[i].LastBlock = now
				}
			}
			in := slices.Clone(ps)
			if shuffle {
				rng2 := rand.New(rand.NewPCG(uint64(k), 7))
				rng2.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
			}
			got := c.Decide(now, in, k%7 == 0, float64(rng.IntN(3))/4)
			log = append(log, fmt.Sprint(sorted(got)))
		}
		return log
	}
	a, b, shuffled, other := run(1, false), run(1, false), run(1, true), run(2, false)
	if !slices.Equal(a, b) || !slices.Equal(a, shuffled) {
		t.Fatal("same seed and inputs gave different decisions")
	}
	if slices.Equal(a, other) {
		t.Fatal("different seeds gave identical decisions")
	}
}

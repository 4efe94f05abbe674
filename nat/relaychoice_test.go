package nat

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestChooseRelays(t *testing.T) {
	ms := time.Millisecond
	set := []Relay{{"a", 40 * ms}, {"b", 10 * ms}, {"c", 0}, {"d", 20 * ms}, {"e", 10 * ms}}
	for _, c := range []struct {
		name    string
		sn      []Relay
		current []string
		want    int
		out     []string
	}{
		{"none elected", nil, []string{"a"}, 2, []string{}},
		{"one elected", []Relay{{"a", 0}}, nil, 2, []string{"a"}},
		{"lowest RTT, ties by ID", set, nil, 2, []string{"b", "e"}},
		{"want below the minimum", set, nil, 0, []string{"b", "e"}},
		{"three", set, nil, 3, []string{"b", "d", "e"}},
		{"unmeasured last", set, nil, 5, []string{"a", "b", "c", "d", "e"}},
		{"unmeasured before nothing", []Relay{{"x", 0}, {"y", 0}, {"z", 5 * ms}}, nil, 2, []string{"x", "z"}},
		{"existing kept though slower", set, []string{"a", "c"}, 2, []string{"a", "c"}},
		{"one existing kept, one free place", set, []string{"a"}, 2, []string{"a", "b"}},
		{"existing that left is replaced", set, []string{"a", "gone"}, 2, []string{"a", "b"}},
		{"more held than wanted: best kept", set, []string{"a", "c", "d"}, 2, []string{"a", "d"}},
		{"duplicates in current count once", set, []string{"a", "a"}, 2, []string{"a", "b"}},
		{"duplicate supernode, best RTT", []Relay{{"a", 90 * ms}, {"b", 50 * ms}, {"a", 5 * ms}, {"c", 60 * ms}}, nil, 2, []string{"a", "b"}},
	} {
		got := ChooseRelays(c.sn, c.current, c.want)
		if !slices.Equal(got, c.out) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.out)
		}
	}
}

func TestChooseRelaysDeterministic(t *testing.T) {
	ms := time.Millisecond
	sn := []Relay{{"a", 40 * ms}, {"b", 10 * ms}, {"c", 0}, {"d", 20 * ms}, {"e", 10 * ms}, {"f", 0}}
	cur := []string{"f", "x", "d"}
	want := ChooseRelays(sn, cur, 3)
	if !slices.Equal(want, []string{"b", "d", "f"}) {
		t.Fatalf("got %v", want)
	}
	r := rand.New(rand.NewPCG(9, 9))
	for range 50 {
		r.Shuffle(len(sn), func(i, j int) { sn[i], sn[j] = sn[j], sn[i] })
		r.Shuffle(len(cur), func(i, j int) { cur[i], cur[j] = cur[j], cur[i] })
		if got := ChooseRelays(sn, cur, 3); !slices.Equal(got, want) {
			t.Fatalf("order changed the choice: %v, want %v", got, want)
		}
	}
}

func TestChooseRelaysStable(t *testing.T) {
	// RTTs change every round; once chosen, a relay stays while elected.
	sn := []Relay{{"a", 0}, {"b", 0}, {"c", 0}, {"d", 0}}
	r := rand.New(rand.NewPCG(1, 1))
	var cur []string
	for round := range 200 {
		for i := range sn {
			sn[i].RTT = time.Duration(1+r.IntN(100)) * time.Millisecond
		}
		got := ChooseRelays(sn, cur, 2)
		if round > 0 && !slices.Equal(got, cur) {
			t.Fatalf("round %d: moved from %v to %v without a supernode leaving", round, cur, got)
		}
		cur = got
	}
	// One leaves: only it is replaced.
	left := cur[0]
	var rest []Relay
	for _, s := range sn {
		if s.ID != left {
			rest = append(rest, s)
		}
	}
	got := ChooseRelays(rest, cur, 2)
	if slices.Contains(got, left) || !slices.Contains(got, cur[1]) || len(got) != 2 {
		t.Fatalf("after %s left: %v (held %v)", left, got, cur)
	}
}

func TestRefreshAt(t *testing.T) {
	for _, c := range []struct {
		name     string
		left, at time.Duration // expiry and answer relative to t0
	}{
		{"one hour", time.Hour, 40 * time.Minute},
		{"three minutes", 3 * time.Minute, 2 * time.Minute},
		{"90 s: two thirds meets the margin", 90 * time.Second, 60 * time.Second},
		{"60 s: the margin wins", time.Minute, 30 * time.Second},
		{"20 s: at once", 20 * time.Second, 0},
		{"expired", -time.Minute, 0},
	} {
		if got := RefreshAt(t0.Add(c.left), t0); !got.Equal(t0.Add(c.at)) {
			t.Errorf("%s: refresh at %v, want %v", c.name, got.Sub(t0), c.at)
		}
	}
}

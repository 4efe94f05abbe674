package nat

import (
	"testing"
	"time"
)

func hist(failures int, ago ...time.Duration) PairHistory {
	h := PairHistory{Failures: failures}
	for _, d := range ago {
		h.Attempts = append(h.Attempts, t0.Add(-d))
	}
	return h
}

func TestDecide(t *testing.T) {
	wait := func(d time.Duration) Action { return Action{Kind: Wait, Until: t0.Add(d)} }
	direct, punch, relay := Action{Kind: Direct}, Action{Kind: Punch}, Action{Kind: RelayOnly}
	for _, c := range []struct {
		name          string
		local, remote Kind
		h             PairHistory
		want          Action
	}{
		{"public-hard", Public, Hard, PairHistory{}, direct},
		{"hard-public", Hard, Public, PairHistory{}, direct},
		{"unknown-public", Unknown, Public, PairHistory{}, direct},
		{"public-public", Public, Public, hist(3, time.Second, 2*time.Second, 3*time.Second), direct},
		{"hard-hard", Hard, Hard, PairHistory{}, relay},
		{"unknown-hard", Unknown, Hard, PairHistory{}, relay},
		{"unknown-unknown", Unknown, Unknown, PairHistory{}, relay},
		{"punched stays direct", Easy, Easy, PairHistory{Punched: true}, direct},
		{"punched hard-hard stays direct", Hard, Hard, PairHistory{Punched: true}, direct},

		{"easy-easy fresh", Easy, Easy, PairHistory{}, punch},
		{"easy-easy 10 s after one", Easy, Easy, hist(1, 10*time.Second), wait(20 * time.Second)},
		{"easy-easy 30 s after one", Easy, Easy, hist(1, 30*time.Second), punch},
		{"easy-easy 1 min after two", Easy, Easy, hist(2, 90*time.Second, time.Minute), wait(time.Minute)},
		{"easy-easy 2 min after two", Easy, Easy, hist(2, 3*time.Minute, 2*time.Minute), punch},
		{"easy-easy after three", Easy, Easy, hist(3, 8*time.Minute, 7*time.Minute, 5*time.Minute), wait(2 * time.Minute)},
		{"easy-easy three, oldest out of the window", Easy, Easy, hist(3, 10*time.Minute, 7*time.Minute, 5*time.Minute), punch},
		{"easy-easy old attempts only", Easy, Easy, hist(3, time.Hour, time.Hour, time.Hour), punch},

		{"easy-hard fresh", Easy, Hard, PairHistory{}, punch},
		{"hard-easy fresh", Hard, Easy, PairHistory{}, punch},
		{"easy-unknown fresh", Easy, Unknown, PairHistory{}, punch},
		{"easy-hard after one failure", Easy, Hard, hist(1, time.Minute), wait(9 * time.Minute)},
		{"hard-easy after one failure", Hard, Easy, hist(1, time.Minute), wait(9 * time.Minute)},
		{"easy-hard 10 min after one failure", Easy, Hard, hist(1, 10*time.Minute), punch},
		{"easy-hard after two failures", Easy, Hard, hist(2, 30*time.Minute, 15*time.Minute), wait(5 * time.Minute)},
		{"easy-hard after many failures", Easy, Hard, hist(9, 30*time.Minute), wait(30 * time.Minute)},
		{"easy-hard, attempt in flight", Easy, Hard, hist(0, time.Second), wait(10*time.Minute - time.Second)},
	} {
		if got := Decide(c.local, c.remote, c.h, t0); got != c.want {
			t.Errorf("%s: got %v until %v, want %v until %v", c.name, got.Kind, got.Until, c.want.Kind, c.want.Until)
		}
	}
}

// simulate asks the policy every second for d, starts a punch whenever it
// says so and has every punch fail 5 s later. It returns the attempt times.
func simulate(local, remote Kind, d time.Duration) []time.Time {
	var h PairHistory
	var attempts []time.Time
	var failAt time.Time
	for now := t0; now.Before(t0.Add(d)); now = now.Add(time.Second) {
		if !failAt.IsZero() && !now.Before(failAt) {
			h.Failed()
			failAt = time.Time{}
		}
		if failAt.IsZero() && Decide(local, remote, h, now).Kind == Punch {
			h.Attempt(now)
			attempts = append(attempts, now)
			failAt = now.Add(5 * time.Second)
		}
	}
	return attempts
}

func TestDecideFailingPunchesBounded(t *testing.T) {
	for _, c := range []struct {
		name          string
		local, remote Kind
		first10       int // attempts in the first 10 minutes
	}{
		{"easy-easy", Easy, Easy, 3},
		{"easy-hard", Easy, Hard, 1},
		{"hard-easy", Hard, Easy, 1},
		{"unknown-easy", Unknown, Easy, 1},
		{"hard-hard", Hard, Hard, 0},
	} {
		attempts := simulate(c.local, c.remote, 10*time.Minute)
		if len(attempts) != c.first10 {
			t.Errorf("%s: %d attempts in 10 minutes of failures (%v), want %d", c.name, len(attempts), attempts, c.first10)
		}
		// Over three hours, no 10-minute window holds more than 3.
		attempts = simulate(c.local, c.remote, 3*time.Hour)
		for i := range attempts {
			n := 0
			for _, a := range attempts[i:] {
				if a.Sub(attempts[i]) < PunchWindow {
					n++
				}
			}
			if n > MaxPunches {
				t.Fatalf("%s: %d attempts in the 10 minutes from %v", c.name, n, attempts[i])
			}
		}
		if c.first10 > 0 && len(attempts) < 2 {
			t.Errorf("%s: %d attempts in three hours: the policy never retries", c.name, len(attempts))
		}
	}
}

func TestDecideSuccessStopsAttempts(t *testing.T) {
	var h PairHistory
	now := t0
	if Decide(Easy, Easy, h, now).Kind != Punch {
		t.Fatal("fresh easy pair: no punch")
	}
	h.Attempt(now)
	h.Failed()
	now = now.Add(EasyRetry1)
	if Decide(Easy, Easy, h, now).Kind != Punch {
		t.Fatal("no retry after EasyRetry1")
	}
	h.Attempt(now)
	h.Succeeded()
	if h.Failures != 0 {
		t.Fatalf("Succeeded left %d failures", h.Failures)
	}
	for i := range 120 {
		if a := Decide(Easy, Easy, h, now.Add(time.Duration(i)*time.Minute)); a.Kind != Direct {
			t.Fatalf("%d min after a successful punch: %v", i, a.Kind)
		}
	}
	// Lost right away: the two attempts still count, so the third waits
	// out EasyRetry2 from the last.
	h.Lost()
	if a := Decide(Easy, Easy, h, now.Add(time.Second)); a.Kind != Wait || !a.Until.Equal(now.Add(EasyRetry2)) {
		t.Fatalf("just after losing the punched connection: %v until %v", a.Kind, a.Until)
	}
}

func TestDecideWaitEndsInPunch(t *testing.T) {
	for _, h := range []PairHistory{
		hist(1, 10*time.Second),
		hist(2, 3*time.Minute, time.Minute),
		hist(3, 9*time.Minute, 8*time.Minute, time.Minute),
		hist(4, 20*time.Second),
	} {
		for _, kinds := range [][2]Kind{{Easy, Easy}, {Easy, Hard}} {
			a := Decide(kinds[0], kinds[1], h, t0)
			if a.Kind != Wait || !a.Until.After(t0) {
				t.Fatalf("%v %v: %v until %v, want a wait", kinds, h, a.Kind, a.Until)
			}
			if b := Decide(kinds[0], kinds[1], h, a.Until.Add(-time.Nanosecond)); b.Kind != Wait {
				t.Fatalf("%v %v: just before Until: %v", kinds, h, b.Kind)
			}
			if b := Decide(kinds[0], kinds[1], h, a.Until); b.Kind != Punch {
				t.Fatalf("%v %v: at Until: %v until %v", kinds, h, b.Kind, b.Until)
			}
		}
	}
}

func TestPairHistoryKeepsLastAttempts(t *testing.T) {
	var h PairHistory
	for i := range 10 {
		h.Attempt(t0.Add(time.Duration(i) * time.Minute))
	}
	if len(h.Attempts) != MaxPunches || !h.Attempts[0].Equal(t0.Add(7*time.Minute)) {
		t.Fatalf("attempts kept: %v", h.Attempts)
	}
}

package dhttest

import (
	"fmt"
	"testing"

	"github.com/peer-overlay/peer/dht/chord"
)

// canFail reports whether x may fail under Zave's operating assumption:
// no other member is left without a live entry in its successor list.
// On a lossy network one live entry more must remain, because a lost
// message or two can make a node drop a live successor by mistake (Zave's
// model has a perfect failure detector; ours times out).
func (s *Sim) canFail(x *Node) bool {
	need := 1
	if s.cfg.Loss > 0 {
		need = 2
	}
	enough := func(list []chord.Peer) bool {
		live := 0
		for _, p := range list {
			if n := s.byName[p.Name]; n != nil && n.Alive && n != x {
				live++
			}
		}
		return live >= min(need, len(list))
	}
	for _, m := range s.Members() {
		if m != x && !enough(m.Core.Succs()) {
			return false
		}
	}
	// Lists in flight count as held: a successor list on its way to a
	// live node will become that node's list.
	for _, e := range s.q {
		if e.kind != evDeliver || (e.msg.Type != chord.MsgState && e.msg.Type != chord.MsgLeaving) {
			continue
		}
		if dst := s.byName[e.msg.To.Name]; dst == nil || !dst.Alive || dst == x {
			continue
		}
		if !enough(append([]chord.Peer{e.msg.From}, e.msg.Nodes...)) {
			return false
		}
	}
	return true
}

// ChurnResult sums up a churn run.
type ChurnResult struct {
	Steps, Events, Joins, Crashes, Leaves int64
	Violation                             error
}

// Churn runs random churn around a ring of about n members: every gapMs
// of simulated time one node joins, crashes or leaves. When check is set,
// the invariants are tested after every simulator step. It stops at the
// first violation or after events churn events.
func (s *Sim) Churn(n int, events int64, gapMs int64, check bool) ChurnResult {
	var res ChurnResult
	next := s.now
	for res.Events < events {
		if s.now >= next {
			next = s.now + 1 + s.rng.Int64N(2*gapMs)
			s.churnOnce(n, &res)
			res.Events++
		}
		if !s.Step() {
			break
		}
		res.Steps++
		if check {
			if err := s.Check(); err != nil {
				res.Violation = fmt.Errorf("after step %d (t=%d ms, churn event %d): %w", res.Steps, s.now, res.Events, err)
				return res
			}
		}
	}
	return res
}

func (s *Sim) churnOnce(n int, res *ChurnResult) {
	members := s.Members()
	if len(members) == 0 {
		return
	}
	// Joins and failures balance around n members.
	pJoin := 0.5
	if len(members) < n*3/4 {
		pJoin = 0.8
	} else if len(members) > n*5/4 {
		pJoin = 0.2
	}
	if len(members) < 3 || s.rng.Float64() < pJoin {
		s.Join(s.Add(), members[s.rng.IntN(len(members))])
		res.Joins++
		return
	}
	x := members[s.rng.IntN(len(members))]
	if !s.canFail(x) {
		return
	}
	if s.rng.IntN(3) == 0 {
		s.Leave(x)
		res.Leaves++
	} else {
		s.Crash(x)
		res.Crashes++
	}
}

func TestChurnKeepsInvariants(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		n     int
		churn int64
		gap   int64
	}{
		{"calm", Config{Seed: 1}, 32, 1500, 300},
		{"lossy", Config{Seed: 2, Loss: 0.05, MaxMs: 80}, 32, 1500, 300},
		{"fast churn", Config{Seed: 3, Loss: 0.02}, 24, 2000, 60},
		{"tiny ring", Config{Seed: 4, R: 3}, 6, 1500, 200},
	}
	total := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := New(c.cfg)
			build(t, s, c.n)
			res := s.Churn(c.n, c.churn, c.gap, true)
			if res.Violation != nil {
				t.Fatal(res.Violation)
			}
			total += res.Steps
			t.Logf("%d steps, %d churn events (%d joins, %d crashes, %d leaves), %d members",
				res.Steps, res.Events, res.Joins, res.Crashes, res.Leaves, len(s.Members()))
			// Once churn stops (and the network is healthy again), the
			// ring converges to the ideal one.
			s.SetLoss(0)
			if !s.RunUntil(func() bool { ok, _ := s.Converged(); return ok }, 500, 120_000) {
				_, err := s.Converged()
				t.Fatalf("no convergence after churn: %v", err)
			}
		})
	}
	t.Logf("%d steps checked in all", total)
}

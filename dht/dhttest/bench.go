package dhttest

import (
	"fmt"
	"math"
	"slices"

	"github.com/peer-overlay/peer/dht/chord"
)

// Grow builds a ring of n live members: one node creates it and the rest
// join through random members, in batches of about 2% of the ring, and the
// ring is run until it is the ideal one. Loss is off while it grows.
func (s *Sim) Grow(n int) error {
	loss := s.cfg.Loss
	defer s.SetLoss(loss)
	s.SetLoss(0)
	if len(s.Members()) == 0 {
		s.Create(s.Add())
	}
	for len(s.Live()) < n {
		members := s.Members()
		batch := min(max(4, len(members)/50), n-len(s.Live()))
		for range batch {
			s.Join(s.Add(), members[s.rng.IntN(len(members))])
		}
		s.RunFor(50)
	}
	ok := s.RunUntil(func() bool { ok, _ := s.Converged(); return ok }, 500, 600_000)
	if !ok {
		_, err := s.Converged()
		return fmt.Errorf("ring of %d did not converge: %w", n, err)
	}
	return nil
}

// BenchResult is what `peer bench dht --sim` prints.
type BenchResult struct {
	Nodes         int     `json:"nodes"`
	Lookups       int     `json:"lookups"`
	MeanHops      float64 `json:"mean_hops"`
	P50Hops       int     `json:"p50_hops"`
	P99Hops       int     `json:"p99_hops"`
	MaxHops       int     `json:"max_hops"`
	HalfLog2N     float64 `json:"half_log2_n"`
	LookupSuccess float64 `json:"lookup_success"`
	FingersRight  float64 `json:"fingers_right"`
	SimSeconds    float64 `json:"sim_seconds"`
	Messages      int64   `json:"messages"`
}

// Bench grows a ring of nodes, lets the fingers settle, then runs lookups
// from random members to random keys and checks each answer against the
// true successor.
func Bench(nodes, lookups int, seed uint64, progress func(string)) (BenchResult, error) {
	if nodes < 1 || lookups < 1 {
		return BenchResult{}, fmt.Errorf("need at least one node and one lookup")
	}
	say := func(f string, a ...any) {
		if progress != nil {
			progress(fmt.Sprintf(f, a...))
		}
	}
	s := New(Config{Seed: seed})
	say("growing a ring of %d nodes", nodes)
	if err := s.Grow(nodes); err != nil {
		return BenchResult{}, err
	}
	say("ring ideal at t=%.1f s (simulated); refreshing fingers", float64(s.now)/1000)
	// One full pass over every finger table after the ring is ideal.
	s.RunFor(int64(chord.IDBits+20) * s.cfg.TickMs)
	res := BenchResult{Nodes: nodes, Lookups: lookups, HalfLog2N: math.Log2(float64(nodes)) / 2}
	res.FingersRight = s.FingersRight()
	sorted := s.sortedMembers()
	var hops []int
	ok := 0
	for done := 0; done < lookups; {
		batch := min(1000, lookups-done)
		keys := make([]chord.ID, batch)
		for i := range keys {
			for j := range keys[i] {
				keys[i][j] = byte(s.rng.UintN(256))
			}
		}
		for i, r := range s.LookupAll(keys) {
			if r == nil || r.Err != nil {
				continue
			}
			hops = append(hops, r.Hops)
			if r.Owner == ownerIn(sorted, keys[i]).Peer {
				ok++
			}
		}
		done += batch
		say("%d/%d lookups", done, lookups)
	}
	slices.Sort(hops)
	sum := 0
	for _, h := range hops {
		sum += h
	}
	if len(hops) > 0 {
		res.MeanHops = float64(sum) / float64(len(hops))
		res.P50Hops = hops[len(hops)/2]
		res.P99Hops = hops[min(len(hops)-1, len(hops)*99/100)]
		res.MaxHops = hops[len(hops)-1]
	}
	res.LookupSuccess = float64(ok) / float64(lookups)
	res.SimSeconds = float64(s.now) / 1000
	res.Messages = s.Sent
	return res, nil
}

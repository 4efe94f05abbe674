package nat

import (
	"cmp"
	"math"
	"math/bits"
	"slices"
)

// Candidate is what the election knows of one member of the group, all of
// it from membership metadata, so that every member holds the same inputs.
type Candidate struct {
	ID string
	// PublicConfirmed: other peers have dialed it back (AutoNAT v2). A
	// peer's claims about its own resources count for nothing without it.
	PublicConfirmed bool
	UptimeSec       int64 // seconds since it started
	Cores           int   // CPU cores it may use
	MemMiB          int   // memory it may use, in MiB
	// UploadBps is the upload cap it is configured with; 0 is uncapped.
	UploadBps int64
	// Incumbent: it advertises the supernode role now.
	Incumbent bool
}

// ElectionParams tunes the election. Zero fields take the defaults; every
// member must use the same values, or they elect different sets.
type ElectionParams struct {
	MinUptimeSec int64 // default 60: a peer that just came up may be gone as fast
	MinCores     int   // default 1
	MinMemMiB    int   // default 256
	// MinUploadBps is the lowest upload cap a supernode may have,
	// default 1 MiB/s; an uncapped peer (UploadBps 0) always passes.
	MinUploadBps int64
	MinSeats     int // default 2: a NATed peer holds reservations on two
	MaxSeats     int // default 16
	// Margin is by how many score buckets a challenger must beat an
	// incumbent to take its seat, default 2.
	Margin int
}

func (p ElectionParams) withDefaults() ElectionParams {
	if p.MinUptimeSec <= 0 {
		p.MinUptimeSec = 60
	}
	if p.MinCores <= 0 {
		p.MinCores = 1
	}
	if p.MinMemMiB <= 0 {
		p.MinMemMiB = 256
	}
	if p.MinUploadBps <= 0 {
		p.MinUploadBps = 1 << 20
	}
	if p.MinSeats <= 0 {
		p.MinSeats = 2
	}
	if p.MaxSeats < p.MinSeats {
		p.MaxSeats = max(16, p.MinSeats)
	}
	if p.Margin <= 0 {
		p.Margin = 2
	}
	return p
}

// Seats is k, the number of supernodes a group of n members elects:
// ceil(sqrt(n)) clamped to [MinSeats, MaxSeats], by default 2 up to 4
// members, 3 for 5 to 9, 10 for 100, and 16 from 226 on. The square root
// balances the load per supernode (n/k reservations each) against the
// number of supernodes every member tracks. Fewer are elected when fewer
// are eligible.
func Seats(n int, p ElectionParams) int {
	p = p.withDefaults()
	k := int(math.Ceil(math.Sqrt(float64(max(n, 0)))))
	return min(max(k, p.MinSeats), p.MaxSeats)
}

// Eligible reports whether c may be a supernode: dialed back by others and
// above every minimum of p. Negative resources are lies and fail.
func Eligible(c Candidate, p ElectionParams) bool {
	p = p.withDefaults()
	return c.PublicConfirmed &&
		c.UptimeSec >= p.MinUptimeSec &&
		c.Cores >= p.MinCores &&
		c.MemMiB >= p.MinMemMiB &&
		(c.UploadBps == 0 || c.UploadBps >= p.MinUploadBps)
}

// Caps of the score buckets.
const (
	uptimeBuckets = 12 // 2^11 minutes, about 34 hours, and longer
	coreBuckets   = 7  // 64 cores and more
	memBuckets    = 8  // 32 GiB and more
	uploadBuckets = 8  // 128 MiB/s and more, or uncapped
)

// Score ranks eligible candidates: the sum of one log2 bucket each for
// uptime (in minutes), cores, memory (in 256 MiB) and upload cap (in MiB/s;
// uncapped counts as the top bucket), each capped. Buckets double in
// width, so a score moves only when a figure doubles or halves: jitter in
// measured resources and the ticking of uptime do not reorder the seats.
// A higher score is better.
func Score(c Candidate) int {
	up := uploadBuckets
	if c.UploadBps != 0 {
		up = bucket(c.UploadBps>>20, uploadBuckets)
	}
	return bucket(c.UptimeSec/60, uptimeBuckets) +
		bucket(int64(c.Cores), coreBuckets) +
		bucket(int64(c.MemMiB)>>8, memBuckets) +
		up
}

// bucket is the bit length of v (0 for v <= 0, 1 for 1, 2 for 2-3, 3 for
// 4-7, ...), at most top.
func bucket(v int64, top int) int {
	if v <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(v)), top)
}

// ranked is a candidate with its score, ordered best first.
type ranked struct {
	Candidate
	score int
}

func byRank(a, b ranked) int {
	if a.score != b.score {
		return cmp.Compare(b.score, a.score)
	}
	return cmp.Compare(a.ID, b.ID)
}

// Elect returns the IDs of the supernodes, sorted, that the group of
// cands elects. Every member computes it from the same metadata and gets
// the same set, whatever the order of cands. The rule:
//
//  1. Only Eligible candidates count; k is Seats(len(group)), or the number
//     eligible if smaller. An ID listed twice counts once, as its least
//     favourable entry.
//  2. Eligible incumbents keep their seats (the best k of them if there
//     are more, as after k shrinks or two groups merge). An incumbent that
//     lost eligibility is out at once.
//  3. Empty seats go to the best challengers by Score, ties to the lower ID.
//  4. Hysteresis: then at most one replacement per election: the best
//     challenger left takes the worst seat if its score beats that seat's
//     by at least Margin buckets.
//
// The elected start advertising the role and the others stop; until that
// metadata spreads the inputs still say who held the seats, and the rule
// gives the same answer again, so a change happens once, not twice.
func Elect(cands []Candidate, p ElectionParams) []string {
	p = p.withDefaults()
	group := dedupe(cands, p)
	var eligible []ranked
	for _, c := range group {
		if Eligible(c, p) {
			eligible = append(eligible, ranked{c, Score(c)})
		}
	}
	slices.SortFunc(eligible, byRank)
	k := min(Seats(len(group), p), len(eligible))

	var seats, rest []ranked
	for _, r := range eligible {
		if r.Incumbent && len(seats) < k {
			seats = append(seats, r)
		} else {
			rest = append(rest, r)
		}
	}
	for len(seats) < k {
		seats, rest = append(seats, rest[0]), rest[1:]
	}
	slices.SortFunc(seats, byRank)
	if len(rest) > 0 && len(seats) > 0 {
		if worst := len(seats) - 1; rest[0].score >= seats[worst].score+p.Margin {
			seats[worst] = rest[0]
		}
	}
	ids := make([]string, len(seats))
	for i, s := range seats {
		ids[i] = s.ID
	}
	slices.Sort(ids)
	return ids
}

// dedupe keeps one entry per ID: the least favourable (ineligible before
// eligible, then non-incumbent, then lower score, then the smaller
// figures), so that a doubled entry can only lose a peer its seat.
func dedupe(cands []Candidate, p ElectionParams) []Candidate {
	byID := map[string]Candidate{}
	for _, c := range cands {
		old, seen := byID[c.ID]
		if !seen || worse(c, old, p) {
			byID[c.ID] = c
		}
	}
	out := make([]Candidate, 0, len(byID))
	for _, c := range byID {
		out = append(out, c)
	}
	return out
}

// worse is a total order on entries of one ID: true if a is less
// favourable than b.
func worse(a, b Candidate, p ElectionParams) bool {
	boolKey := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(boolKey(Eligible(a, p)), boolKey(Eligible(b, p))),
		cmp.Compare(boolKey(a.Incumbent), boolKey(b.Incumbent)),
		cmp.Compare(Score(a), Score(b)),
		cmp.Compare(boolKey(a.PublicConfirmed), boolKey(b.PublicConfirmed)),
		cmp.Compare(a.UptimeSec, b.UptimeSec),
		cmp.Compare(a.Cores, b.Cores),
		cmp.Compare(a.MemMiB, b.MemMiB),
		cmp.Compare(a.UploadBps, b.UploadBps),
	) < 0
}

package distribute

import (
	"math"
	"slices"
)

// Percentile is the nearest-rank p-th percentile (0 < p <= 100) of xs: the
// smallest value with at least p% of the values at or below it; 0 for no
// values.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Times is the summary of the targets' times: how long each that finished
// took.
type Times struct {
	P50 float64 `json:"p50_seconds"`
	P99 float64 `json:"p99_seconds"`
	Max float64 `json:"max_seconds"`
}

// Summarize gives p50, p99 and the largest of secs.
func Summarize(secs []float64) Times {
	if len(secs) == 0 {
		return Times{}
	}
	return Times{P50: Percentile(secs, 50), P99: Percentile(secs, 99), Max: slices.Max(secs)}
}

// ETA is the time left to fetch the rest of size bytes of which have of
// pieces are done, at rate bytes a second; 0 when it cannot be told.
func ETA(have, pieces int, size int64, rate float64) float64 {
	if pieces <= 0 || rate <= 0 || have >= pieces {
		return 0
	}
	left := float64(size) * float64(pieces-have) / float64(pieces)
	return left / rate
}

package distribute

import (
	"math"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{9, 1, 8, 2, 7, 3, 6, 4, 5, 10} // 1..10, shuffled
	for _, c := range []struct{ p, want float64 }{
		{50, 5}, {99, 10}, {100, 10}, {10, 1}, {11, 2}, {90, 9}, {1, 1},
	} {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v of 1..10 = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 9 {
		t.Error("Percentile sorted its input in place")
	}
	if Percentile(nil, 50) != 0 {
		t.Error("p50 of nothing is not 0")
	}
	one := []float64{3.5}
	if Percentile(one, 50) != 3.5 || Percentile(one, 99) != 3.5 {
		t.Error("percentiles of one value are not that value")
	}
	// 200 values: p99 is the 198th, not the largest.
	var many []float64
	for i := 1; i <= 200; i++ {
		many = append(many, float64(i))
	}
	if got := Percentile(many, 99); got != 198 {
		t.Errorf("p99 of 1..200 = %v, want 198", got)
	}
}

func TestSummarize(t *testing.T) {
	got := Summarize([]float64{4, 2, 30, 3, 1})
	if got.P50 != 3 || got.P99 != 30 || got.Max != 30 {
		t.Errorf("got %+v, want p50 3, p99 30, max 30", got)
	}
	if (Summarize(nil) != Times{}) {
		t.Error("summary of nothing is not zero")
	}
}

func TestETA(t *testing.T) {
	if got := ETA(25, 100, 100<<20, 1<<20); math.Abs(got-75) > 1e-9 {
		t.Errorf("ETA = %v, want 75", got)
	}
	for _, c := range [][4]float64{{0, 0, 100, 1}, {1, 10, 100, 0}, {10, 10, 100, 5}} {
		if got := ETA(int(c[0]), int(c[1]), int64(c[2]), c[3]); got != 0 {
			t.Errorf("ETA%v = %v, want 0 (unknown)", c, got)
		}
	}
}

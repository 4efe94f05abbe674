package dhttest

import "testing"

// benchChecked grows a ring of n, runs lookups and checks the issue's
// figures: every lookup answered with the true successor, mean hops at most
// ½·log2 N + 0.3, and every finger table right after one full refresh.
func benchChecked(t *testing.T, n, lookups int, seed uint64) {
	t.Helper()
	res, err := Bench(n, lookups, seed, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.LookupSuccess != 1 {
		t.Errorf("lookup success %.4f, want 1", res.LookupSuccess)
	}
	if res.MeanHops > res.HalfLog2N+0.3 {
		t.Errorf("mean hops %.2f above ½·log2 N + 0.3 = %.2f", res.MeanHops, res.HalfLog2N+0.3)
	}
	if res.FingersRight != 1 {
		t.Errorf("only %.3f of finger tables are right after a full refresh", res.FingersRight)
	}
}

func TestBenchHops(t *testing.T) { benchChecked(t, 1024, 2000, 1) }

// The figure at N = 10,000 (about 30 s).
func TestBenchHops10000(t *testing.T) { benchChecked(t, 10_000, 2000, 2) }

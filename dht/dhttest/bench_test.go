package dhttest

import "testing"

func TestBenchHops(t *testing.T) {
	res, err := Bench(1024, 2000, 1, nil)
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

package swarm

import (
	"math"
	"strconv"
	"testing"
)

// FuzzParseSize: sizes come from flags, config.toml and control API
// bodies. A size that parses is a whole, non-negative count of at most
// 2^62 bytes, and its decimal form parses back to it.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "256KiB", "1.5GB", "1000", "16 MiB", "0", "1e3k", "0x10", ".5k", "-0", "4611686018427387904", "1e30GB", "Inf", "NaN"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseSize(%q) failed but returned %d", s, n)
			}
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if back, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, which reads back as %d, %v", s, n, back, err)
		}
	})
}

// FuzzParseRate: a rate is a size per second; "/s" is optional, so a rate
// and the size it names agree.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"4MiB/s", "500KB/s", "0", " 1k/s ", "/s", "1/s/s", "fast"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r < 0 || r > 1<<62 || math.IsNaN(r) || r != math.Trunc(r) {
			t.Fatalf("ParseRate(%q) = %v", s, r)
		}
		if back, err := ParseRate(strconv.FormatFloat(r, 'f', -1, 64) + "/s"); err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %v, which reads back as %v, %v", s, r, back, err)
		}
	})
}

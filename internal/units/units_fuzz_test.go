package units

import (
	"math"
	"strconv"
	"testing"
)

// FuzzParseSize: sizes come from flags, config.toml and control API
// bodies. A size that parses is a whole, non-negative count of at most
// 2^62 bytes, and both its decimal form and its String parse back to it.
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
		if back, err := ParseSize(strconv.FormatInt(int64(n), 10)); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, which reads back as %d, %v", s, n, back, err)
		}
		if back, err := ParseSize(n.String()); err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, written %q, which reads back as %d, %v", s, n, n.String(), back, err)
		}
	})
}

// FuzzParseRate: a rate is a size per second; "/s" is optional, so a rate
// and the size it names agree, and its String parses back to it.
func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"4MiB/s", "500KB/s", "0", " 1k/s ", "/s", "1/s/s", "fast"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		v := float64(r)
		if v < 0 || v > 1<<62 || math.IsNaN(v) || v != math.Trunc(v) {
			t.Fatalf("ParseRate(%q) = %v", s, v)
		}
		if back, err := ParseRate(strconv.FormatFloat(v, 'f', -1, 64) + "/s"); err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %v, which reads back as %v, %v", s, v, back, err)
		}
		if back, err := ParseRate(r.String()); err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %v, written %q, which reads back as %v, %v", s, v, r.String(), back, err)
		}
	})
}

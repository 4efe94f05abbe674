package swarm

import "testing"

func TestParseSizeAndRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{{"64MiB", 64 << 20}, {"256KiB", 256 << 10}, {"1GB", 1e9}, {"1000", 1000}, {"1.5m", 3 << 19}, {"16 MiB", 16 << 20}} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1MiB", "12parsecs", "1e30GB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q): want an error", bad)
		}
	}
	if r, err := ParseRate("4MiB/s"); err != nil || r != 4<<20 {
		t.Errorf("ParseRate(4MiB/s) = %v, %v", r, err)
	}
	if _, err := ParseRate("fast"); err == nil {
		t.Error("ParseRate(fast): want an error")
	}
}

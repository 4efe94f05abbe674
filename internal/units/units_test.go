package units

import (
	"encoding"
	"encoding/json"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// flagValue is pflag.Value, which cobra flags take.
type flagValue interface {
	String() string
	Set(string) error
	Type() string
}

var (
	_ flagValue                = new(Size)
	_ flagValue                = new(Rate)
	_ encoding.TextMarshaler   = Size(0)
	_ encoding.TextUnmarshaler = new(Size)
	_ encoding.TextMarshaler   = Rate(0)
	_ encoding.TextUnmarshaler = new(Rate)
)

func TestParseSizeAndRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Size
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

func TestString(t *testing.T) {
	for _, c := range []struct {
		n    Size
		want string
	}{{0, "0"}, {1000, "1KB"}, {1023, "1023"}, {64 << 20, "64MiB"}, {3 << 19, "1536KiB"}, {1e9, "1GB"}, {5 << 40, "5TiB"}} {
		if got := c.n.String(); got != c.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(c.n), got, c.want)
		}
	}
	for _, c := range []struct {
		r    Rate
		want string
	}{{0, "0"}, {4 << 20, "4MiB/s"}, {500e3, "500KB/s"}, {1536, "1536/s"}, {0.5, "0.5/s"}} {
		if got := c.r.String(); got != c.want {
			t.Errorf("Rate(%v).String() = %q, want %q", float64(c.r), got, c.want)
		}
	}
}

// Bad input is refused with a message that shows it and says what would
// do; the empty string is 0, as a value left out.
func TestSetErrors(t *testing.T) {
	var s Size
	if err := s.Set("12parsecs"); err == nil || !strings.Contains(err.Error(), `"12parsecs"`) || !strings.Contains(err.Error(), "unknown unit") {
		t.Errorf("Size.Set(12parsecs) = %v", err)
	}
	if err := s.Set("-1k"); err == nil || !strings.Contains(err.Error(), "want a number of bytes such as 64MiB") {
		t.Errorf("Size.Set(-1k) = %v", err)
	}
	var r Rate
	if err := r.Set("fast"); err == nil || err.Error() != `rate "fast": want bytes per second such as 4MiB/s or 500KB/s` {
		t.Errorf("Rate.Set(fast) = %v", err)
	}
	s, r = 5, 5
	if err := s.Set(""); err != nil || s != 0 {
		t.Errorf(`Size.Set("") = %v, %d`, err, s)
	}
	if err := r.Set(""); err != nil || r != 0 {
		t.Errorf(`Rate.Set("") = %v, %v`, err, r)
	}
}

// JSON and TOML carry both as the strings a user writes.
func TestText(t *testing.T) {
	type req struct {
		Piece Size `json:"piece,omitempty" toml:"piece"`
		Up    Rate `json:"up,omitempty" toml:"up"`
	}
	b, err := json.Marshal(req{Piece: 64 << 10, Up: 4 << 20})
	if err != nil || string(b) != `{"piece":"64KiB","up":"4MiB/s"}` {
		t.Fatalf("json.Marshal = %s, %v", b, err)
	}
	if b, _ := json.Marshal(req{}); string(b) != `{}` {
		t.Errorf("zero values marshal to %s, want them left out", b)
	}
	var got req
	if err := json.Unmarshal([]byte(`{"piece":"16 KiB","up":"500KB/s"}`), &got); err != nil || got != (req{16 << 10, 500e3}) {
		t.Errorf("json.Unmarshal = %+v, %v", got, err)
	}
	err = json.Unmarshal([]byte(`{"up":"fast"}`), &got)
	if err == nil || !strings.Contains(err.Error(), `rate "fast": want bytes per second`) {
		t.Errorf("json.Unmarshal of a bad rate: %v", err)
	}
	got = req{}
	if _, err := toml.Decode("piece = \"1MiB\"\nup = \"2MiB/s\"\n", &got); err != nil || got != (req{1 << 20, 2 << 20}) {
		t.Errorf("toml.Decode = %+v, %v", got, err)
	}
	_, err = toml.Decode("up = \"fast\"\n", &got)
	if err == nil || !strings.Contains(err.Error(), `rate "fast": want bytes per second`) {
		t.Errorf("toml.Decode of a bad rate: %v", err)
	}
}

// Package units holds the byte sizes and rates that flags, config.toml
// and the control API carry as text, such as 64MiB or 4MiB/s. Each is
// parsed once, where it comes in, into a Size or a Rate; both write
// themselves back in the same form, so a config file or a request
// survives a round trip.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a count of bytes.
type Size int64

// Rate is bytes per second; 0 means no limit.
type Rate float64

// maxSize is the largest size that parses.
const maxSize = 1 << 62

// ParseSize reads a byte count such as 64MiB, 256KiB, 1.5GB or 1000
// (binary and decimal suffixes, case-insensitive; B optional).
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes such as 64MiB, 256KiB or 1GB", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, KB, MB, GB)", s, unit)
	}
	if v*mult > maxSize {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v * mult), nil
}

// ParseRate reads a rate such as 4MiB/s or 500KB/s (the /s is optional);
// 0 means no limit.
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	n, err := ParseSize(t)
	if err != nil {
		return 0, fmt.Errorf("rate %q: want bytes per second such as 4MiB/s or 500KB/s", s)
	}
	return Rate(n), nil
}

// suffixes are the units String writes, largest first: a size is written
// in the largest unit that divides it.
var suffixes = []struct {
	mult int64
	name string
}{
	{1 << 40, "TiB"}, {1e12, "TB"},
	{1 << 30, "GiB"}, {1e9, "GB"},
	{1 << 20, "MiB"}, {1e6, "MB"},
	{1 << 10, "KiB"}, {1e3, "KB"},
}

// String writes n as ParseSize reads it, exactly: 64MiB, 1GB, 1000.
func (n Size) String() string {
	for _, u := range suffixes {
		if n > 0 && int64(n)%u.mult == 0 {
			return strconv.FormatInt(int64(n)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(n), 10)
}

// Set reads a flag's value; the empty string is 0. It makes a Size a
// pflag.Value.
func (n *Size) Set(s string) error {
	if s == "" {
		*n = 0
		return nil
	}
	v, err := ParseSize(s)
	if err != nil {
		return err
	}
	*n = v
	return nil
}

// Type names the flag's value in help text.
func (*Size) Type() string { return "size" }

// MarshalText writes the form String does.
func (n Size) MarshalText() ([]byte, error) { return []byte(n.String()), nil }

// UnmarshalText reads what ParseSize does; the empty string is 0, as a
// field left out is.
func (n *Size) UnmarshalText(b []byte) error { return n.Set(string(b)) }

// String writes r as ParseRate reads it: 4MiB/s, 500KB/s, or 0 for no
// limit.
func (r Rate) String() string {
	f := float64(r)
	switch {
	case f == 0:
		return "0"
	case f == math.Trunc(f) && math.Abs(f) <= maxSize:
		return Size(f).String() + "/s"
	}
	return strconv.FormatFloat(f, 'f', -1, 64) + "/s"
}

// Set reads a flag's value; the empty string is 0. It makes a Rate a
// pflag.Value.
func (r *Rate) Set(s string) error {
	if s == "" {
		*r = 0
		return nil
	}
	v, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// Type names the flag's value in help text.
func (*Rate) Type() string { return "rate" }

// MarshalText writes the form String does.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads what ParseRate does; the empty string is 0, as a
// field left out is.
func (r *Rate) UnmarshalText(b []byte) error { return r.Set(string(b)) }

// FormatBytes prints n with a binary unit, for people to read: 1.5 MiB.
func FormatBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

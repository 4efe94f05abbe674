package defaults

import "testing"

func TestSet(t *testing.T) {
	for _, c := range []struct{ in, want int }{{0, 7}, {-3, 7}, {2, 2}} {
		v := c.in
		Set(&v, 7)
		if v != c.want {
			t.Errorf("Set(%d, 7) = %d, want %d", c.in, v, c.want)
		}
	}
	f := 0.5
	Set(&f, 2)
	if f != 0.5 {
		t.Errorf("Set(0.5, 2) = %v", f)
	}
	var u uint8
	Set(&u, 3)
	if u != 3 {
		t.Errorf("Set(uint8 0, 3) = %d", u)
	}
	s, e := "x", ""
	Set(&s, "d")
	Set(&e, "d")
	if s != "x" || e != "d" {
		t.Errorf("strings: got %q and %q, want x and d", s, e)
	}
}

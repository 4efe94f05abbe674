package chord

import (
	"math/big"
	"math/rand/v2"
	"testing"
)

var ringSize = new(big.Int).Lsh(big.NewInt(1), IDBits)

func toBig(a ID) *big.Int { return new(big.Int).SetBytes(a[:]) }

func fromBig(t *testing.T, x *big.Int) ID {
	t.Helper()
	x = new(big.Int).Mod(x, ringSize)
	var id ID
	x.FillBytes(id[:])
	return id
}

func randomID(r *rand.Rand) ID {
	var id ID
	for i := range id {
		id[i] = byte(r.UintN(256))
	}
	// Edge values come up often enough to matter.
	switch r.IntN(8) {
	case 0:
		id = ID{}
	case 1:
		for i := range id {
			id[i] = 0xff
		}
	}
	return id
}

// TestArithmeticMatchesBigInt checks Add, Sub, Cmp and FingerStart against
// math/big on random and edge values.
func TestArithmeticMatchesBigInt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		a, b := randomID(r), randomID(r)
		if got, want := a.Add(b), fromBig(t, new(big.Int).Add(toBig(a), toBig(b))); got != want {
			t.Fatalf("%s + %s = %s, want %s", a, b, got, want)
		}
		if got, want := a.Sub(b), fromBig(t, new(big.Int).Sub(toBig(a), toBig(b))); got != want {
			t.Fatalf("%s - %s = %s, want %s", a, b, got, want)
		}
		if got, want := a.Cmp(b), toBig(a).Cmp(toBig(b)); got != want {
			t.Fatalf("cmp(%s, %s) = %d, want %d", a, b, got, want)
		}
		k := r.IntN(IDBits)
		want := fromBig(t, new(big.Int).Add(toBig(a), new(big.Int).Lsh(big.NewInt(1), uint(k))))
		if got := a.FingerStart(k); got != want {
			t.Fatalf("finger %d of %s = %s, want %s", k, a, got, want)
		}
	}
}

// TestBetweenMatchesDefinition checks the arc tests against their
// definition on the integers: x in (a, b) going clockwise.
func TestBetweenMatchesDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	inOpen := func(x, a, b ID) bool {
		xa := new(big.Int).Mod(new(big.Int).Sub(toBig(x), toBig(a)), ringSize)
		ba := new(big.Int).Mod(new(big.Int).Sub(toBig(b), toBig(a)), ringSize)
		if ba.Sign() == 0 {
			return xa.Sign() != 0
		}
		return xa.Sign() > 0 && xa.Cmp(ba) < 0
	}
	for i := 0; i < 20000; i++ {
		x, a, b := randomID(r), randomID(r), randomID(r)
		switch r.IntN(4) { // make x sit on an end now and then
		case 0:
			x = a
		case 1:
			x = b
		}
		if got, want := Between(x, a, b), inOpen(x, a, b); got != want {
			t.Fatalf("Between(%s, %s, %s) = %v, want %v", x.Short(), a.Short(), b.Short(), got, want)
		}
		if got, want := BetweenRightIncl(x, a, b), x == b || inOpen(x, a, b); got != want {
			t.Fatalf("BetweenRightIncl(%s, %s, %s) = %v, want %v", x.Short(), a.Short(), b.Short(), got, want)
		}
	}
}

func TestBetweenWraps(t *testing.T) {
	lo, _ := ParseID("0000000000000000000000000000000000000010")
	hi, _ := ParseID("fffffffffffffffffffffffffffffffffffffff0")
	zero := ID{}
	if !Between(zero, hi, lo) {
		t.Error("0 should lie in (hi, lo), the arc across the top of the ring")
	}
	if Between(zero, lo, hi) {
		t.Error("0 should not lie in (lo, hi)")
	}
	if !BetweenRightIncl(lo, hi, lo) || Between(lo, hi, lo) {
		t.Error("the right end belongs to (a, b] but not to (a, b)")
	}
	if !Between(hi, lo, lo) || Between(lo, lo, lo) {
		t.Error("(a, a) is the whole ring but a")
	}
}

func TestParseIDAndHash(t *testing.T) {
	id := HashID([]byte("peer"))
	back, err := ParseID(id.String())
	if err != nil || back != id {
		t.Fatalf("round trip: %s, %v", back, err)
	}
	for _, bad := range []string{"", "abc", id.String() + "00", "zz" + id.String()[2:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): want an error", bad)
		}
	}
	if PowerOfTwo(0).LeadingZeros() != IDBits-1 || PowerOfTwo(IDBits-1).LeadingZeros() != 0 || (ID{}).LeadingZeros() != IDBits {
		t.Error("LeadingZeros disagrees with PowerOfTwo")
	}
}

func FuzzParseID(f *testing.F) {
	f.Add(HashID(nil).String())
	f.Add("not hex")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err == nil && reparse(id) != id {
			t.Fatalf("%q parsed to %s, which does not parse back", s, id)
		}
	})
}

// reparse parses an ID's own text form.
func reparse(id ID) ID {
	back, err := ParseID(id.String())
	if err != nil {
		panic(err)
	}
	return back
}

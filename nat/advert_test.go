package nat

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAdvertRoundTrip(t *testing.T) {
	for _, a := range []Advert{
		{},
		{Kind: Public, Reachable: true, Supernode: true, Mapped: netip.MustParseAddrPort("198.18.1.2:4001"), UptimeSec: 3840, Cores: 2, MemMiB: 24576},
		{Kind: Easy, PortPreserved: true, Mapped: netip.MustParseAddrPort("[2001:db8::1]:9"), UploadBps: 1 << 20},
		{Kind: Hard, Mapped: netip.MustParseAddrPort("198.18.7.2:61000")},
		{Kind: Public, Reachable: true, Vouches: []uint32{1, 5, 1 << 31}},
	} {
		b := a.Encode(nil)
		if len(b) > MaxAdvertSize {
			t.Fatalf("%+v encodes to %d bytes, over %d", a, len(b), MaxAdvertSize)
		}
		got, err := DecodeAdvert(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", a, err)
		}
		if !got.Equal(a) {
			t.Fatalf("round trip: got %+v, want %+v", got, a)
		}
		// A later version's extra fields are skipped.
		got, err = DecodeAdvert(append(b, 7, 7, 7))
		if err != nil || !got.Equal(a) {
			t.Fatalf("with trailing fields: %+v, %v", got, err)
		}
	}
}

func TestAdvertRefusesMalformed(t *testing.T) {
	good := Advert{Kind: Easy, Mapped: netip.MustParseAddrPort("198.18.1.2:4001"), Cores: 2}.Encode(nil)
	for name, b := range map[string][]byte{
		"empty":            nil,
		"short":            good[:3],
		"version":          append([]byte{9}, good[1:]...),
		"address length":   append([]byte{1, 2, 0, 5}, good[4:]...),
		"truncated addr":   good[:7],
		"truncated number": good[:len(good)-2],
		"zero port":        {1, 2, 0, 4, 198, 18, 1, 2, 0, 0, 0, 0, 0, 0},
		"too long":         make([]byte, MaxAdvertSize+1),
		"huge number":      {1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0},
		"short vouches":    {1, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1},
		"truncated":        good[:len(good)-2],
		"unsorted vouches": {1, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 1},
		"too many vouches": append([]byte{1, 1, 0, 0, 0, 0, 0, 0, MaxVouches + 1}, make([]byte, 4*(MaxVouches+1))...),
	} {
		if _, err := DecodeAdvert(b); !errors.Is(err, ErrBadAdvert) {
			t.Errorf("%s: %v, want ErrBadAdvert", name, err)
		}
	}
	// A kind this version does not know reads as Unknown.
	b := append([]byte(nil), good...)
	b[1] = 42
	if a, err := DecodeAdvert(b); err != nil || a.Kind != Unknown {
		t.Fatalf("unknown kind: %+v, %v", a, err)
	}
}

func TestRoundUptime(t *testing.T) {
	for in, want := range map[int64]int64{0: 0, 1: 1, 3: 2, 59: 32, 64: 64, 3600: 2048, -5: 0} {
		if got := RoundUptime(in); got != want {
			t.Errorf("RoundUptime(%d) = %d, want %d", in, got, want)
		}
	}
}

func FuzzDecodeAdvert(f *testing.F) {
	f.Add(Advert{Kind: Public, Mapped: netip.MustParseAddrPort("198.18.1.2:4001"), Cores: 2}.Encode(nil))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := DecodeAdvert(b)
		if err != nil {
			return
		}
		again, err := DecodeAdvert(a.Encode(nil))
		if err != nil || !again.Equal(a) {
			t.Fatalf("re-encoding %+v: %+v, %v", a, again, err)
		}
	})
}

package stunx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

var tx1 = TxID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// build makes a STUN message of type typ with transaction ID tx1 from
// pion setters, the way another implementation would.
func build(t testing.TB, typ stun.MessageType, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{typ, stun.NewTransactionIDSetter(tx1)}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), m.Raw...)
}

func TestBindingRequestShape(t *testing.T) {
	b := NewBindingRequest(tx1)
	if len(b) != RequestSize || RequestSize != 64 {
		t.Fatalf("request is %d bytes, RequestSize %d; want both 64", len(b), RequestSize)
	}
	if RequestSize < MaxAnswerSize {
		t.Fatalf("RequestSize %d < MaxAnswerSize %d: answers would amplify", RequestSize, MaxAnswerSize)
	}
	if !IsSTUN(b) {
		t.Fatal("IsSTUN(request) = false")
	}
	m, err := decode(b)
	if err != nil {
		t.Fatalf("our own request does not decode: %v", err)
	}
	if m.Type != stun.BindingRequest || TxID(m.TransactionID) != tx1 {
		t.Fatalf("got %s tx %x", m.Type, m.TransactionID)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	var sw stun.Software
	if err := sw.GetFrom(m); err != nil || sw.String() != softwarePad {
		t.Fatalf("SOFTWARE = %q, %v", sw, err)
	}
	if other := NewBindingRequest(TxID{9}); bytes.Equal(other[8:20], b[8:20]) {
		t.Fatal("transaction ID not taken from the argument")
	}
}

func TestNewTxID(t *testing.T) {
	src := bytes.NewReader(bytes.Repeat([]byte{0xAB}, 12))
	id, err := NewTxID(src)
	if err != nil || id != (TxID{0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB, 0xAB}) {
		t.Fatalf("NewTxID = %x, %v", id, err)
	}
	if _, err := NewTxID(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Fatal("NewTxID from a 5-byte reader did not fail")
	}
}

func TestIsSTUN(t *testing.T) {
	req := NewBindingRequest(tx1)
	quicLong := append([]byte{0xC3}, req[1:]...) // QUIC long header bits, cookie in place
	quicShort := append([]byte{0x40}, req[1:]...)
	noCookie := append([]byte(nil), req...)
	noCookie[4] ^= 1
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"request", req, true},
		{"header only", req[:20], true},
		{"19 bytes", req[:19], false},
		{"empty", nil, false},
		{"QUIC long header", quicLong, false},
		{"QUIC short header", quicShort, false},
		{"no cookie", noCookie, false},
		{"random junk", bytes.Repeat([]byte{0x5A}, 48), false},
	} {
		if got := IsSTUN(c.b); got != c.want {
			t.Errorf("%s: IsSTUN = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseBindingResponse(t *testing.T) {
	v4 := netip.MustParseAddrPort("198.18.0.7:4001")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:4001")
	xor := func(ap netip.AddrPort) stun.Setter {
		return &stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	}
	mapped := func(ap netip.AddrPort) stun.Setter {
		return &stun.MappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}
	}
	raw := func(typ stun.AttrType, v []byte) stun.Setter { return stun.RawAttribute{Type: typ, Value: v} }

	good := build(t, stun.BindingSuccess, xor(v4), stun.Fingerprint)
	badFP := append([]byte(nil), good...)
	badFP[len(badFP)-1] ^= 0xFF
	oddLen := append([]byte(nil), good...)
	binary.BigEndian.PutUint16(oddLen[2:4], uint16(len(good)-HeaderSize-2))

	for _, c := range []struct {
		name string
		b    []byte
		want netip.AddrPort
		err  error
	}{
		{"XOR IPv4", build(t, stun.BindingSuccess, xor(v4)), v4, nil},
		{"XOR IPv4 with fingerprint", good, v4, nil},
		{"XOR IPv6", build(t, stun.BindingSuccess, xor(v6)), v6, nil},
		{"MAPPED fallback", build(t, stun.BindingSuccess, mapped(v4), stun.NewSoftware("old")), v4, nil},
		{"XOR preferred over MAPPED", build(t, stun.BindingSuccess, mapped(netip.MustParseAddrPort("1.2.3.4:5")), xor(v4)), v4, nil},
		{"our answer", buildAnswer(tx1, v6), v6, nil},
		{"junk", []byte("hello, this is not stun at all"), netip.AddrPort{}, ErrNotSTUN},
		{"QUIC-looking", append([]byte{0xC0}, good[1:]...), netip.AddrPort{}, ErrNotSTUN},
		{"truncated", good[:len(good)-4], netip.AddrPort{}, ErrMalformed},
		{"trailing bytes", append(append([]byte(nil), good...), 0, 0, 0, 0), netip.AddrPort{}, ErrMalformed},
		{"trailing bytes, no fingerprint", append(build(t, stun.BindingSuccess, xor(v4)), 0, 0, 0, 0), netip.AddrPort{}, ErrMalformed},
		{"length not a multiple of 4", oddLen, netip.AddrPort{}, ErrMalformed},
		{"bad fingerprint", badFP, netip.AddrPort{}, ErrMalformed},
		{"fingerprint not last", build(t, stun.BindingSuccess, stun.Fingerprint, xor(v4)), netip.AddrPort{}, ErrMalformed},
		{"a request", NewBindingRequest(tx1), netip.AddrPort{}, ErrNotBindingResponse},
		{"an indication", build(t, stun.NewType(stun.MethodBinding, stun.ClassIndication), xor(v4)), netip.AddrPort{}, ErrNotBindingResponse},
		{"error response", build(t, stun.BindingError, stun.CodeBadRequest), netip.AddrPort{}, ErrErrorResponse},
		{"error response without code", build(t, stun.BindingError), netip.AddrPort{}, ErrErrorResponse},
		{"no address", build(t, stun.BindingSuccess, stun.NewSoftware("x")), netip.AddrPort{}, ErrNoAddress},
		{"empty XOR value", build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, nil)), netip.AddrPort{}, ErrBadAddress},
		{"short XOR value", build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, []byte{0, 1, 0, 1, 1, 2})), netip.AddrPort{}, ErrBadAddress},
		{"IPv6 family, IPv4 length", build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, []byte{0, 2, 0, 1, 1, 2, 3, 4})), netip.AddrPort{}, ErrBadAddress},
		{"unknown family", build(t, stun.BindingSuccess, raw(stun.AttrXORMappedAddress, []byte{0, 3, 0, 1, 1, 2, 3, 4})), netip.AddrPort{}, ErrBadAddress},
		{"short MAPPED value", build(t, stun.BindingSuccess, raw(stun.AttrMappedAddress, []byte{0, 2, 0, 1, 1, 2, 3, 4})), netip.AddrPort{}, ErrBadAddress},
		{"port 0", build(t, stun.BindingSuccess, xor(netip.MustParseAddrPort("198.18.0.7:0"))), netip.AddrPort{}, ErrBadAddress},
		{"unspecified", build(t, stun.BindingSuccess, &stun.XORMappedAddress{IP: net.IPv4zero, Port: 9}), netip.AddrPort{}, ErrBadAddress},
	} {
		tx, got, err := ParseBindingResponse(c.b)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%s: err = %v, want %v", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want || tx != tx1 {
			t.Errorf("%s: got %s tx %x err %v, want %s tx %x", c.name, got, tx, err, c.want, tx1)
		}
		if got.Addr().Is4In6() {
			t.Errorf("%s: %s is an IPv4-mapped IPv6 address, want plain IPv4", c.name, got)
		}
	}
}

func TestParseErrorCodeInMessage(t *testing.T) {
	_, _, err := ParseBindingResponse(build(t, stun.BindingError, stun.CodeBadRequest))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("400")) {
		t.Fatalf("error %v does not name the code 400", err)
	}
}

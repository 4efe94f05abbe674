package stunx

import (
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

// FuzzParseBindingResponse feeds any bytes to the parser. It must not
// panic; what it accepts must be a Binding success response whose ID is
// the header's and whose address someone could dial.
func FuzzParseBindingResponse(f *testing.F) {
	f.Add(buildAnswer(tx1, netip.MustParseAddrPort("198.18.0.7:4001")))
	f.Add(buildAnswer(tx1, netip.MustParseAddrPort("[2001:db8::1]:1")))
	f.Add(build(f, stun.BindingSuccess, &stun.MappedAddress{IP: []byte{1, 2, 3, 4}, Port: 5}))
	f.Add(build(f, stun.BindingError, stun.CodeBadRequest))
	f.Add(build(f, stun.BindingSuccess, stun.RawAttribute{Type: stun.AttrXORMappedAddress, Value: []byte{0, 2}}))
	f.Add(NewBindingRequest(tx1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tx, ap, err := ParseBindingResponse(b)
		if err != nil {
			if ap.IsValid() {
				t.Fatalf("error %v with an address %s", err, ap)
			}
			return
		}
		if !IsSTUN(b) || TxID(b[8:20]) != tx {
			t.Fatalf("accepted %x with tx %x", b, tx)
		}
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
			t.Fatalf("accepted address %s", ap)
		}
		m, err := decode(b)
		if err != nil || m.Type != stun.BindingSuccess {
			t.Fatalf("accepted a message decode refuses or of type %v: %v", m, err)
		}
	})
}

// FuzzResponderAnswer feeds any request from any source to a Responder.
// It must not panic; an answer must be no larger than the request and
// parse back to the request's ID and the sender's address.
func FuzzResponderAnswer(f *testing.F) {
	f.Add(NewBindingRequest(tx1), []byte{198, 18, 0, 1}, uint16(4001))
	f.Add(NewBindingRequest(tx1), []byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint16(1))
	f.Add(NewBindingRequest(tx1)[:20], []byte{198, 18, 0, 1}, uint16(4001))
	f.Add(build(f, stun.BindingRequest, stun.NewSoftware("0123456789abcdefghij")), []byte{10, 0, 0, 1}, uint16(9))
	f.Add([]byte("junk"), []byte{}, uint16(0))
	f.Fuzz(func(t *testing.T, req, ip []byte, port uint16) {
		a, _ := netip.AddrFromSlice(ip)
		from := netip.AddrPortFrom(a, port)
		r := NewResponder(ResponderConfig{})
		resp, ok, why := r.Answer(req, from, t0)
		if !ok {
			if resp != nil || why == "" {
				t.Fatalf("refusal with %d bytes and reason %q", len(resp), why)
			}
			return
		}
		if why != "" {
			t.Fatalf("answer with reason %q", why)
		}
		if len(resp) > len(req) {
			t.Fatalf("answer of %d bytes to a request of %d", len(resp), len(req))
		}
		tx, got, err := ParseBindingResponse(resp)
		if err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if tx != TxID(req[8:20]) {
			t.Fatalf("answer tx %x, request tx %x", tx, req[8:20])
		}
		if want := netip.AddrPortFrom(a.Unmap().WithZone(""), port); got != want {
			t.Fatalf("answer says %s, sender was %s", got, want)
		}
	})
}

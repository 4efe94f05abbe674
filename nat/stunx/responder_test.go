package stunx

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestResponderAnswers(t *testing.T) {
	r := NewResponder(ResponderConfig{})
	for _, c := range []struct {
		from, want string
	}{
		{"198.18.0.9:4001", "198.18.0.9:4001"},
		{"[2001:db8::9]:5555", "[2001:db8::9]:5555"},
		{"[::ffff:198.18.0.10]:7", "198.18.0.10:7"}, // from a dual-stack socket
	} {
		req := NewBindingRequest(tx1)
		resp, ok, why := r.Answer(req, netip.MustParseAddrPort(c.from), t0)
		if !ok {
			t.Fatalf("from %s: refused: %s", c.from, why)
		}
		if len(resp) > len(req) {
			t.Fatalf("from %s: answer %d bytes > request %d", c.from, len(resp), len(req))
		}
		tx, got, err := ParseBindingResponse(resp)
		if err != nil || tx != tx1 || got != netip.MustParseAddrPort(c.want) {
			t.Fatalf("from %s: answer parses to %s tx %x err %v, want %s", c.from, got, tx, err, c.want)
		}
		m, _ := decode(resp)
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatalf("from %s: answer fingerprint: %v", c.from, err)
		}
		wantLen := 40
		if netip.MustParseAddrPort(c.want).Addr().Is6() {
			wantLen = MaxAnswerSize
		}
		if len(resp) != wantLen {
			t.Fatalf("from %s: answer is %d bytes, want %d", c.from, len(resp), wantLen)
		}
	}
}

func TestResponderRefuses(t *testing.T) {
	from4 := netip.MustParseAddrPort("198.18.0.9:4001")
	from6 := netip.MustParseAddrPort("[2001:db8::9]:4001")
	minimal := build(t, stun.BindingRequest)                                                // 20 bytes
	withFP := build(t, stun.BindingRequest, stun.NewSoftware("abcdefgh"), stun.Fingerprint) // 20+12+8 = 40
	req := NewBindingRequest(tx1)
	badFP := append([]byte(nil), req...)
	badFP[len(badFP)-1] ^= 1
	for _, c := range []struct {
		name string
		req  []byte
		from netip.AddrPort
		want string
	}{
		{"invalid source", req, netip.AddrPort{}, ReasonBadSource},
		{"unspecified source", req, netip.MustParseAddrPort("0.0.0.0:4001"), ReasonBadSource},
		{"port 0", req, netip.MustParseAddrPort("198.18.0.9:0"), ReasonBadSource},
		{"junk", []byte("0123456789abcdefghijklmnopqrstuvwxyz"), from4, ReasonNotSTUN},
		{"truncated", req[:len(req)-8], from4, ReasonMalformed},
		{"bad fingerprint", badFP, from4, ReasonMalformed},
		{"a response", buildAnswer(tx1, from4), from4, ReasonNotBindingRequest},
		{"another method", build(t, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.NewSoftware("0123456789abcdefghijklmnopqrstuvwxyz")), from4, ReasonNotBindingRequest},
		{"USERNAME", build(t, stun.BindingRequest, stun.NewUsername("0123456789abcdefghijklmnopqrstuvwxyz")), from4, ReasonRequiredAttribute},
		{"PADDING", build(t, stun.BindingRequest, stun.RawAttribute{Type: stun.AttrPadding, Value: make([]byte, 40)}), from4, ReasonRequiredAttribute},
		{"minimal request, IPv4", minimal, from4, ReasonAmplification},
		{"40-byte request, IPv6", withFP, from6, ReasonAmplification},
	} {
		resp, ok, why := NewResponder(ResponderConfig{}).Answer(c.req, c.from, t0)
		if ok || resp != nil || why != c.want {
			t.Errorf("%s: ok=%v len=%d reason %q, want refusal %q", c.name, ok, len(resp), why, c.want)
		}
	}
	// The same 40-byte request is exactly large enough for an IPv4 answer.
	if _, ok, why := NewResponder(ResponderConfig{}).Answer(withFP, from4, t0); !ok {
		t.Errorf("40-byte request from IPv4 refused: %s", why)
	}
}

func TestResponderSourceRate(t *testing.T) {
	r := NewResponder(ResponderConfig{SourceRate: 10, SourceBurst: 20})
	a := netip.MustParseAddrPort("198.18.0.1:1")
	b := netip.MustParseAddrPort("198.18.0.2:1")
	req := NewBindingRequest(tx1)
	for i := range 20 {
		if _, ok, why := r.Answer(req, a, t0); !ok {
			t.Fatalf("answer %d of the burst refused: %s", i, why)
		}
	}
	if _, ok, why := r.Answer(req, a, t0); ok || why != ReasonSourceRate {
		t.Fatalf("21st answer at once: ok=%v %q, want %q", ok, why, ReasonSourceRate)
	}
	// Another port of the same IP is the same source.
	if _, ok, _ := r.Answer(req, netip.AddrPortFrom(a.Addr(), 2), t0); ok {
		t.Fatal("another port of an exhausted IP was answered")
	}
	if _, ok, why := r.Answer(req, b, t0); !ok {
		t.Fatalf("another source refused: %s", why)
	}
	// 100 ms earns one token at 10/s: one answer, then refusal again.
	t1 := t0.Add(100 * time.Millisecond)
	if _, ok, why := r.Answer(req, a, t1); !ok {
		t.Fatalf("after 100 ms: refused: %s", why)
	}
	if _, ok, _ := r.Answer(req, a, t1); ok {
		t.Fatal("after 100 ms: a second answer")
	}
	// A clock that steps back earns nothing.
	if _, ok, _ := r.Answer(req, a, t0.Add(-time.Hour)); ok {
		t.Fatal("a step back of the clock earned tokens")
	}
	// Refused junk costs nothing: b still has its burst minus one.
	minimal := build(t, stun.BindingRequest)
	for range 100 {
		r.Answer([]byte("junk junk junk junk junk"), b, t0)
		if _, _, why := r.Answer(minimal, b, t0); why != ReasonAmplification {
			t.Fatalf("minimal request: %q", why)
		}
	}
	for i := range 19 {
		if _, ok, why := r.Answer(req, b, t0); !ok {
			t.Fatalf("b's answer %d refused after junk: %s", i, why)
		}
	}
}

func TestResponderIPv6Prefix(t *testing.T) {
	r := NewResponder(ResponderConfig{SourceRate: 1, SourceBurst: 1})
	req := NewBindingRequest(tx1)
	if _, ok, _ := r.Answer(req, netip.MustParseAddrPort("[2001:db8:1:2::1]:1"), t0); !ok {
		t.Fatal("first answer refused")
	}
	if _, ok, why := r.Answer(req, netip.MustParseAddrPort("[2001:db8:1:2:ffff::9]:1"), t0); ok || why != ReasonSourceRate {
		t.Fatalf("same /64: ok=%v %q, want the /64 counted as one source", ok, why)
	}
	if _, ok, _ := r.Answer(req, netip.MustParseAddrPort("[2001:db8:1:3::1]:1"), t0); !ok {
		t.Fatal("another /64 refused")
	}
}

func TestResponderGlobalRate(t *testing.T) {
	r := NewResponder(ResponderConfig{GlobalRate: 5, GlobalBurst: 50})
	req := NewBindingRequest(tx1)
	answered := 0
	for i := range 200 {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 9)
		_, ok, why := r.Answer(req, from, t0)
		if ok {
			answered++
		} else if why != ReasonGlobalRate {
			t.Fatalf("source %d: reason %q, want %q", i, why, ReasonGlobalRate)
		}
	}
	if answered != 50 {
		t.Fatalf("answered %d of 200 distinct sources at once, want the global burst 50", answered)
	}
	// One second earns 5 more.
	answered = 0
	for i := range 20 {
		from := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}), 9)
		if _, ok, _ := r.Answer(req, from, t0.Add(time.Second)); ok {
			answered++
		}
	}
	if answered != 5 {
		t.Fatalf("answered %d after 1 s, want 5", answered)
	}
}

func TestResponderTableBounded(t *testing.T) {
	r := NewResponder(ResponderConfig{SourceRate: 1, SourceBurst: 1, MaxSources: 3})
	req := NewBindingRequest(tx1)
	src := func(i int) netip.AddrPort { return netip.MustParseAddrPort(fmt.Sprintf("198.18.%d.%d:9", i>>8, i&255)) }
	answer := func(i int) bool { _, ok, _ := r.Answer(req, src(i), t0); return ok }

	// A spends its only token; B and C fill the table; A is heard again
	// (refused, but now the freshest), so D evicts B, the stalest.
	if !answer(1) || !answer(2) || !answer(3) {
		t.Fatal("first answers refused")
	}
	if answer(1) {
		t.Fatal("A answered twice with a burst of 1")
	}
	if !answer(4) {
		t.Fatal("D refused")
	}
	if r.Sources() != 3 {
		t.Fatalf("table holds %d sources, want 3", r.Sources())
	}
	if answer(1) {
		t.Fatal("A was evicted although B was staler")
	}
	// B was forgotten, so it comes back with a full bucket (evicting C).
	if !answer(2) {
		t.Fatal("B, forgotten, was refused")
	}
	for i := 5; i < 1000; i++ {
		answer(i)
	}
	if r.Sources() != 3 {
		t.Fatalf("after 1000 sources the table holds %d, want 3", r.Sources())
	}
}

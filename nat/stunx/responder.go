package stunx

import (
	"net/netip"
	"time"

	"github.com/pion/stun/v3"
)

// Reasons a Responder refuses a request. They are fixed strings, so the
// binding can log a refusal once per source and reason instead of once per
// datagram.
const (
	// ReasonBadSource: the sender's address is invalid, unspecified or
	// has port 0, so there is nothing to answer to.
	ReasonBadSource = "bad source address"
	// ReasonNotSTUN: the datagram is not STUN (IsSTUN is false).
	ReasonNotSTUN = "not STUN"
	// ReasonMalformed: the datagram claims to be STUN but does not
	// decode, or its FINGERPRINT is wrong.
	ReasonMalformed = "malformed STUN message"
	// ReasonNotBindingRequest: well-formed STUN, but not a Binding request.
	ReasonNotBindingRequest = "not a Binding request"
	// ReasonRequiredAttribute: the request carries a comprehension-required
	// attribute (USERNAME, MESSAGE-INTEGRITY, PADDING, ...). RFC 8489
	// answers unknown ones with a 420 error and authenticates the others;
	// we do neither and send nothing: our peers' requests carry none.
	ReasonRequiredAttribute = "comprehension-required attribute"
	// ReasonAmplification: the answer would be larger than the request.
	ReasonAmplification = "answer would be larger than request"
	// ReasonSourceRate: the sender (its IPv4 address or IPv6 /64) is over
	// its rate.
	ReasonSourceRate = "source over rate limit"
	// ReasonGlobalRate: the Responder is over its rate in all.
	ReasonGlobalRate = "over global rate limit"
)

// ResponderConfig sets a Responder's limits. Zero fields take the defaults.
type ResponderConfig struct {
	// SourceRate is the answers per second one source earns, default 10.
	// A peer refreshes its mapping every 25 s or so; 10/s is far more
	// than an honest one needs.
	SourceRate float64
	// SourceBurst is the most answers a source can have in hand,
	// default 20.
	SourceBurst float64
	// MaxSources bounds the table of sources, default 4096. When it is
	// full the source heard from least recently is forgotten.
	MaxSources int
	// GlobalRate is the answers per second in all, default 500 (20 KB/s
	// of IPv4 answers).
	GlobalRate float64
	// GlobalBurst is the most answers in hand in all, default 1000.
	GlobalBurst float64
}

func (c ResponderConfig) withDefaults() ResponderConfig {
	if c.SourceRate <= 0 {
		c.SourceRate = 10
	}
	if c.SourceBurst < 1 {
		c.SourceBurst = 20
	}
	if c.MaxSources <= 0 {
		c.MaxSources = 4096
	}
	if c.GlobalRate <= 0 {
		c.GlobalRate = 500
	}
	if c.GlobalBurst < 1 {
		c.GlobalBurst = 1000
	}
	return c
}

// Responder is the STUN server a supernode runs on its QUIC socket. It
// answers well-formed Binding requests with the sender's address in
// XOR-MAPPED-ADDRESS, never with more bytes than the request had, and at
// bounded rates per source and in all, so that it cannot be used to
// reflect or amplify a flood at a spoofed victim.
//
// It is a deterministic core: the time comes in with each request. It is
// not safe for concurrent use; the binding has one reader per socket.
type Responder struct {
	lim *limiter
}

// NewResponder returns a Responder with the limits of cfg.
func NewResponder(cfg ResponderConfig) *Responder {
	return &Responder{lim: newLimiter(cfg.withDefaults())}
}

// Answer decides what to send back to from, which sent req at now. With
// ok it returns the answer, a Binding success response with req's
// transaction ID, from's address in XOR-MAPPED-ADDRESS and a FINGERPRINT,
// no longer than req. Without ok it returns nil and one of the Reason
// constants. Only requests that would be answered count against the rate
// limits, so junk and oversized answers cost a source nothing.
func (r *Responder) Answer(req []byte, from netip.AddrPort, now time.Time) (resp []byte, ok bool, reason string) {
	ip := from.Addr().Unmap()
	if !ip.IsValid() || ip.IsUnspecified() || from.Port() == 0 {
		return nil, false, ReasonBadSource
	}
	if !IsSTUN(req) {
		return nil, false, ReasonNotSTUN
	}
	m, err := decode(req)
	if err != nil {
		return nil, false, ReasonMalformed
	}
	if m.Type != stun.BindingRequest {
		return nil, false, ReasonNotBindingRequest
	}
	for _, a := range m.Attributes {
		if a.Type.Required() {
			return nil, false, ReasonRequiredAttribute
		}
	}
	if answerSize(ip) > len(req) {
		return nil, false, ReasonAmplification
	}
	if ok, why := r.lim.allow(ip, now); !ok {
		return nil, false, why
	}
	resp = buildAnswer(TxID(m.TransactionID), netip.AddrPortFrom(ip.WithZone(""), from.Port()))
	if len(resp) > len(req) {
		// answerSize is the promise; this is the check that keeps it.
		return nil, false, ReasonAmplification
	}
	return resp, true, ""
}

// Sources reports how many sources the rate limiter remembers now.
func (r *Responder) Sources() int { return r.lim.lru.Len() }

// answerSize is the length of the answer to a sender at ip.
func answerSize(ip netip.Addr) int {
	if ip.Is4() {
		return MaxAnswerSize - 12
	}
	return MaxAnswerSize
}

// buildAnswer writes the Binding success response to tx for to.
func buildAnswer(tx TxID, to netip.AddrPort) []byte {
	m := stun.New()
	m.SetType(stun.BindingSuccess)
	m.TransactionID = tx
	m.WriteHeader()
	x := stun.XORMappedAddress{IP: to.Addr().AsSlice(), Port: int(to.Port())}
	if err := x.AddTo(m); err != nil {
		panic("stunx: XOR-MAPPED-ADDRESS: " + err.Error()) // a 4- or 16-byte IP never fails
	}
	if err := stun.Fingerprint.AddTo(m); err != nil {
		panic("stunx: fingerprint: " + err.Error())
	}
	return append([]byte(nil), m.Raw...)
}

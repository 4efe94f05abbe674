package nat

import (
	"net/netip"
	"slices"
	"time"
)

// Kind is how this peer's UDP mapping behaves, as the STUN answers of the
// supernodes show it. The pair policy decides from the kinds of both ends
// whether to dial, punch or relay.
type Kind int

// The mapping kinds.
const (
	// Unknown: fewer than two supernodes (on distinct IPs) have answered,
	// so nothing can be said yet. The pair policy treats it as Hard for
	// punching.
	Unknown Kind = iota
	// Public: every answer reports one of our own addresses: no NAT in
	// the way of the mapping (a firewall may still be).
	Public
	// Easy: every supernode sees the same ip:port though we are not on
	// it, an endpoint-independent mapping: the address one peer learns
	// is the one another can punch to.
	Easy
	// Hard: supernodes on different IPs see different ip:port, an
	// endpoint-dependent mapping (symmetric NAT): punching is a gamble.
	Hard
)

// String names the kind as netcheck prints it.
func (k Kind) String() string {
	switch k {
	case Public:
		return "public"
	case Easy:
		return "easy"
	case Hard:
		return "hard"
	default:
		return "unknown"
	}
}

// AnswerWindow is how far back from the newest answer the classifier
// looks. Only the latest answer of each supernode IP counts, and only if it
// arrived within this window of the newest one, so that a supernode that
// stopped answering, or a mapping the NAT has since changed, stops
// counting. With STUN refreshes every 25 s or so it spans a few rounds.
const AnswerWindow = 2 * time.Minute

// Answer is one STUN Binding answer received on the QUIC socket.
type Answer struct {
	Server netip.AddrPort // the supernode that answered
	Mapped netip.AddrPort // the address it saw us at
	At     time.Time      // when the answer arrived
}

// Local describes the socket the answers came to.
type Local struct {
	// Listen is the socket's listen addresses. The first one fixes the
	// address family classified (IPv4 for an IPv4 or IPv4-mapped address,
	// IPv6 otherwise); answers of the other family are ignored. With no
	// listen address nothing is classified (Unknown).
	Listen []netip.AddrPort
	// Interfaces is the host's interface addresses. They matter only for
	// an unspecified listen address (0.0.0.0 or ::): a mapped address is
	// then ours when its port is the listen port and its IP one of these.
	Interfaces []netip.Addr
}

// Mapping is the classifier's verdict.
type Mapping struct {
	Kind Kind // Unknown until two supernode IPs have answered
	// PortPreserved: every counted answer's mapped port equals our
	// listen port. The NAT keeps ports, so a punch can guess ours.
	PortPreserved bool
	// Addr is our public ip:port when Kind is Easy or Public (for Public
	// on a host several servers reached on different addresses, the one
	// most answers report, the lowest on a tie); zero otherwise.
	Addr netip.AddrPort
	// Servers is how many distinct supernode IPs the verdict rests on.
	Servers int
}

// Classify is the pure form of the classifier: the verdict on answers
// (any order) received on local's socket. Per supernode IP only the latest
// answer counts (on equal times, the higher mapped address, so that the
// verdict does not depend on the order of answers), and only answers
// within AnswerWindow of the newest. Then, as tailscale netcheck's
// MappingVariesByDestIP: fewer than two servers is Unknown, even when the
// one answer shows a local address; all of them reporting local addresses
// is Public; all reporting one same ip:port is Easy; anything else is
// Hard. Two supernodes on one IP count once (the later answer): a mapping
// that depends on the destination address would look Easy to them.
//
// Classify has no memory, so it never keeps Hard once the answers that
// showed it have aged out; a Classifier does.
func Classify(local Local, answers []Answer) Mapping {
	fam, ok := family(local)
	if !ok {
		return Mapping{}
	}
	latest := map[netip.Addr]Answer{}
	for _, a := range answers {
		a, ok := clean(a, fam)
		if !ok {
			continue
		}
		if old, seen := latest[a.Server.Addr()]; !seen || newer(a, old) {
			latest[a.Server.Addr()] = a
		}
	}
	return verdict(local, fam, latest)
}

// family reports whether local's first listen address is IPv4.
func family(local Local) (is4, ok bool) {
	if len(local.Listen) == 0 {
		return false, false
	}
	return local.Listen[0].Addr().Unmap().Is4(), true
}

// clean unmaps an answer's addresses and drops answers that are of the
// wrong family, inconsistent (a server reached over IPv4 cannot have seen
// us on IPv6) or unusable.
func clean(a Answer, is4 bool) (Answer, bool) {
	a.Server = netip.AddrPortFrom(a.Server.Addr().Unmap().WithZone(""), a.Server.Port())
	a.Mapped = netip.AddrPortFrom(a.Mapped.Addr().Unmap().WithZone(""), a.Mapped.Port())
	s, m := a.Server.Addr(), a.Mapped.Addr()
	if !s.IsValid() || !m.IsValid() || m.IsUnspecified() || a.Mapped.Port() == 0 {
		return a, false
	}
	return a, s.Is4() == is4 && m.Is4() == is4
}

// newer reports whether a replaces b as its server's latest answer.
func newer(a, b Answer) bool {
	if !a.At.Equal(b.At) {
		return a.At.After(b.At)
	}
	return a.Mapped.Compare(b.Mapped) > 0
}

// current returns the answers within AnswerWindow of the newest.
func current(latest map[netip.Addr]Answer) []Answer {
	var newest time.Time
	for _, a := range latest {
		if a.At.After(newest) {
			newest = a.At
		}
	}
	cut := newest.Add(-AnswerWindow)
	var out []Answer
	for _, a := range latest {
		if !a.At.Before(cut) {
			out = append(out, a)
		}
	}
	return out
}

// verdict classifies the latest answers per server.
func verdict(local Local, is4 bool, latest map[netip.Addr]Answer) Mapping {
	cur := current(latest)
	m := Mapping{Servers: len(cur), PortPreserved: len(cur) > 0}
	allLocal, allSame := true, true
	for _, a := range cur {
		if !isLocal(local, is4, a.Mapped) {
			allLocal = false
		}
		if a.Mapped != cur[0].Mapped {
			allSame = false
		}
		if !localPort(local, is4, a.Mapped.Port()) {
			m.PortPreserved = false
		}
	}
	switch {
	case len(cur) < 2:
		m.Kind = Unknown
	case allLocal:
		m.Kind, m.Addr = Public, mostCommon(cur)
	case allSame:
		m.Kind, m.Addr = Easy, cur[0].Mapped
	default:
		m.Kind = Hard
	}
	return m
}

// isLocal reports whether ap is one of the socket's own addresses.
func isLocal(local Local, is4 bool, ap netip.AddrPort) bool {
	for _, l := range local.Listen {
		la := l.Addr().Unmap().WithZone("")
		if la.Is4() != is4 || l.Port() != ap.Port() {
			continue
		}
		if !la.IsUnspecified() {
			if la == ap.Addr() {
				return true
			}
			continue
		}
		for _, ifa := range local.Interfaces {
			if ifa.Unmap().WithZone("") == ap.Addr() {
				return true
			}
		}
	}
	return false
}

// localPort reports whether port is a listen port of the family.
func localPort(local Local, is4 bool, port uint16) bool {
	for _, l := range local.Listen {
		if l.Addr().Unmap().Is4() == is4 && l.Port() == port {
			return true
		}
	}
	return false
}

// mostCommon returns the mapped address most answers report, the lowest
// on a tie.
func mostCommon(as []Answer) netip.AddrPort {
	count := map[netip.AddrPort]int{}
	for _, a := range as {
		count[a.Mapped]++
	}
	var best netip.AddrPort
	for ap, n := range count {
		if !best.IsValid() || n > count[best] || n == count[best] && ap.Compare(best) < 0 {
			best = ap
		}
	}
	return best
}

// Classifier is the classifier with memory, fed answers as they arrive.
// Beyond Classify it makes Hard sticky: once two supernodes have seen us at
// different addresses, the peer stays Hard for the life of the Classifier
// (a NAT that sometimes maps per destination is one to plan for as hard),
// until SetLocal reports a different socket or host. One consequence to
// know: a NAT that rebinds (reboots, or expires an idle mapping) between
// the answers of two supernodes makes an easy NAT look hard; the binding
// may start a new Classifier when it has reason to think so.
//
// It is a deterministic core: times come in with the answers. It is not
// safe for concurrent use.
type Classifier struct {
	local  Local
	is4    bool
	ok     bool
	latest map[netip.Addr]Answer
	hard   bool
}

// NewClassifier returns a Classifier for the socket described by local.
func NewClassifier(local Local) *Classifier {
	c := &Classifier{}
	c.reset(local)
	return c
}

func (c *Classifier) reset(local Local) {
	c.local = Local{Listen: slices.Clone(local.Listen), Interfaces: slices.Clone(local.Interfaces)}
	c.is4, c.ok = family(local)
	c.latest = map[netip.Addr]Answer{}
	c.hard = false
}

// SetLocal tells the Classifier the socket's addresses now. If they
// differ from the ones it has (as sets, in any order) it forgets every
// answer and the stickiness of Hard: a new address means a new path
// through perhaps another NAT.
func (c *Classifier) SetLocal(local Local) {
	if !sameLocal(c.local, local) {
		c.reset(local)
	}
}

// Observe takes one answer. An answer older than the one already held for
// its server IP is ignored; answers that fell out of AnswerWindow are
// forgotten, so memory stays bounded by the servers heard from lately.
func (c *Classifier) Observe(a Answer) {
	if !c.ok {
		return
	}
	a, ok := clean(a, c.is4)
	if !ok {
		return
	}
	key := a.Server.Addr()
	if old, seen := c.latest[key]; seen && !newer(a, old) {
		return
	}
	c.latest[key] = a
	keep := current(c.latest)
	if len(keep) < len(c.latest) {
		c.latest = map[netip.Addr]Answer{}
		for _, a := range keep {
			c.latest[a.Server.Addr()] = a
		}
	}
	if verdict(c.local, c.is4, c.latest).Kind == Hard {
		c.hard = true
	}
}

// Result returns the verdict now: Classify's on the answers held, except
// that a Classifier that has once seen Hard says Hard.
func (c *Classifier) Result() Mapping {
	if !c.ok {
		return Mapping{}
	}
	m := verdict(c.local, c.is4, c.latest)
	if c.hard {
		m.Kind, m.Addr = Hard, netip.AddrPort{}
	}
	return m
}

// sameLocal compares two Locals as sets of (unmapped) addresses.
func sameLocal(a, b Local) bool {
	norm := func(l Local) ([]netip.AddrPort, []netip.Addr) {
		ls := make([]netip.AddrPort, 0, len(l.Listen))
		for _, ap := range l.Listen {
			ls = append(ls, netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()))
		}
		is := make([]netip.Addr, 0, len(l.Interfaces))
		for _, ip := range l.Interfaces {
			is = append(is, ip.Unmap().WithZone(""))
		}
		slices.SortFunc(ls, netip.AddrPort.Compare)
		slices.SortFunc(is, netip.Addr.Compare)
		return slices.Compact(ls), slices.Compact(is)
	}
	la, ia := norm(a)
	lb, ib := norm(b)
	// The first listen address fixes the family, so it must agree too.
	fa, oka := family(a)
	fb, okb := family(b)
	return slices.Equal(la, lb) && slices.Equal(ia, ib) && fa == fb && oka == okb
}

// SeesLocal reports whether a current answer shows one of the socket's own
// addresses: no NAT between this peer and that server. With a single
// server that is not a verdict (the classifier needs two), but with other
// evidence, such as members dialing this peer directly, it is enough to
// call the peer public.
func (c *Classifier) SeesLocal() bool {
	if !c.ok {
		return false
	}
	for _, a := range current(c.latest) {
		if isLocal(c.local, c.is4, a.Mapped) {
			return true
		}
	}
	return false
}

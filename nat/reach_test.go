package nat

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// publicMember is a public, dialed-back member that vouches for the
// public members a, b, c and d.
func publicMember(id string, super bool) Member {
	return Member{ID: id, HasAdvert: true, QUIC: []netip.AddrPort{netip.MustParseAddrPort("198.18.1.2:4001")},
		Advert: Advert{Kind: Public, Reachable: true, Supernode: super, UptimeSec: 3840, Cores: 4, MemMiB: 8192,
			Vouches: sortedVouches([]uint32{VouchTag("a"), VouchTag("b"), VouchTag("c"), VouchTag("d")})}}
}

func TestReachElectsFromAdvertsAndSaysWhy(t *testing.T) {
	members := []Member{publicMember("a", false), publicMember("b", false), publicMember("c", false), publicMember("d", false),
		{ID: "old"}, // no advert: an older peer, never a candidate
		{ID: "liar", HasAdvert: true, Advert: Advert{Kind: Public, Reachable: true, Cores: 64, MemMiB: 1 << 16, UptimeSec: 1 << 20}}, // nobody vouches
	}
	r := NewReach(nil, ReachConfig{Self: "self", Resources: Resources{Cores: 2, MemMiB: 1024},
		Members: func() []Member { return members }})
	now := time.Now()
	r.Step(now)
	// Six candidates (the one without an advert is none): k = 3, equal
	// scores, ties by ID; the liar claims to be dialed back, but nobody
	// vouches for it, so it is not eligible.
	if got := r.Supernodes(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("elected %v, want [a b c]", got)
	}
	role, why := r.Role()
	if role || why == "" {
		t.Fatalf("role %v (%q): a peer with no mapping must not be a supernode", role, why)
	}
	// The elected take the role; the set holds on the next rounds.
	for i := range 3 {
		members[i].Advert.Supernode = true
	}
	for i := range 10 {
		r.Step(now.Add(time.Duration(i) * time.Second))
	}
	if got := r.Supernodes(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("elected %v after steady rounds, want [a b c]", got)
	}
	if n := r.Changes(now.Add(500 * time.Millisecond)); n != 0 {
		t.Fatalf("%d changes while nothing changed", n)
	}
	members[0].Advert.Reachable = false // a can no longer be dialed
	r.Step(now.Add(time.Minute))
	if got := r.Supernodes(); !slices.Equal(got, []string{"b", "c", "d"}) {
		t.Fatalf("elected %v after a became unreachable, want [b c d]", got)
	}
}

func TestSTUNServersOrder(t *testing.T) {
	nat := Member{ID: "n", HasAdvert: true, Advert: Advert{Kind: Easy, Mapped: netip.MustParseAddrPort("198.18.9.2:4001")}, QUIC: []netip.AddrPort{netip.MustParseAddrPort("198.19.1.2:4001")}}
	hard := Member{ID: "h", HasAdvert: true, Advert: Advert{Kind: Hard}, QUIC: []netip.AddrPort{netip.MustParseAddrPort("198.19.2.2:4001")}}
	lan := Member{ID: "l", QUIC: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.5:4001")}}
	pub := publicMember("p", false)
	pub.QUIC = []netip.AddrPort{netip.MustParseAddrPort("198.18.2.2:4001")}
	sup := publicMember("s", true)
	self := publicMember("self", true)
	got := STUNServers("self", []Member{nat, hard, lan, pub, sup, self, {ID: "empty"}})
	want := []netip.AddrPort{sup.QUIC[0], pub.QUIC[0], lan.QUIC[0], nat.Advert.Mapped}
	if !slices.Equal(got, want) {
		t.Fatalf("servers %v, want %v (supernodes, public, others, easy at its mapped address; never self, a hard-NAT peer or a NATed peer's inside address)", got, want)
	}
}

// A member that claims a public address nobody vouches for is refused,
// and that is logged once, after the grace for vouches to arrive.
func TestReachLogsAnUnverifiedClaimOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	members := []Member{publicMember("a", true), publicMember("b", true), publicMember("c", false),
		{ID: "liar", HasAdvert: true, Advert: Advert{Kind: Public, Reachable: true, Cores: 64, MemMiB: 1 << 16, UptimeSec: 1 << 20}}}
	r := NewReach(nil, ReachConfig{Self: "self", Members: func() []Member { return members }, Log: log})
	now := time.Now()
	for _, at := range []time.Duration{0, time.Second, unverifiedGrace + time.Second, 2 * unverifiedGrace, 3 * unverifiedGrace} {
		r.Step(now.Add(at))
		if slices.Contains(r.Supernodes(), "liar") {
			t.Fatalf("the liar was elected at +%v", at)
		}
	}
	if n := strings.Count(buf.String(), "claims a public address nobody could reach"); n != 1 {
		t.Fatalf("the refusal was logged %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "peer=liar") {
		t.Fatalf("the log does not name the liar:\n%s", buf.String())
	}
}

// A peer told to lie (a test switch) advertises public and dialed back
// whatever it knows, and its own election still refuses it: nobody
// vouches.
func TestReachClaimPublicLies(t *testing.T) {
	members := []Member{publicMember("a", false), publicMember("b", false)}
	r := NewReach(nil, ReachConfig{Self: "self", Resources: Resources{Cores: 2, MemMiB: 1024},
		Members: func() []Member { return members }, ClaimPublic: true, Election: ElectionParams{MinUptimeSec: 1}})
	r.Step(time.Now())
	if a := r.Advert(); a.Kind != Public || !a.Reachable {
		t.Fatalf("advert %+v, want the lie: public and reachable", a)
	}
	if slices.Contains(r.Supernodes(), "self") {
		t.Fatalf("the liar elected itself: %v", r.Supernodes())
	}
}

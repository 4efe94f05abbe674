package nat

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func publicMember(id string, super bool) Member {
	return Member{ID: id, HasAdvert: true, QUIC: []netip.AddrPort{netip.MustParseAddrPort("198.18.1.2:4001")},
		Advert: Advert{Kind: Public, Reachable: true, Supernode: super, UptimeSec: 3840, Cores: 4, MemMiB: 8192}}
}

func TestReachElectsFromAdvertsAndSaysWhy(t *testing.T) {
	members := []Member{publicMember("a", false), publicMember("b", false), publicMember("c", false), publicMember("d", false),
		{ID: "old"}, // no advert: an older peer, never a candidate
		{ID: "liar", HasAdvert: true, Advert: Advert{Kind: Public, Cores: 64, MemMiB: 1 << 16, UptimeSec: 1 << 20}}, // never dialed back
	}
	r := NewReach(nil, ReachConfig{Self: "self", Resources: Resources{Cores: 2, MemMiB: 1024},
		Members: func() []Member { return members }})
	now := time.Now()
	r.Step(now)
	// Six candidates (the one without an advert is none): k = 3, equal
	// scores, ties by ID; the liar is never dialed back, so not eligible.
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

//go:build linux

package integration

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
)

// natPlace is where one peer of a NAT test bed runs.
type natPlace struct {
	kind   string     // public, easy or hard: what netcheck must say
	public netip.Addr // the address the world sees it at (its NAT's, behind one)
}

// natFlags are the daemon flags of the NAT test bed: its internet counts as
// public, and supernodes may be elected after a second.
var natFlags = []string{"--count-as-public", "198.18.0.0/16", "--supernode-min-uptime", "1"}

// natCluster starts public peers on the test bed's internet and one peer
// behind each NAT of sites, all joined through the first public peer, or
// skips, loudly, when the test bed cannot be built here.
func natCluster(t *testing.T, public int, sites []netns.SiteSpec) (*netns.Testbed, *Cluster, []natPlace) {
	t.Helper()
	if err := netns.Available(); err != nil {
		t.Skipf("SKIPPING: the NAT test bed needs root, ip and iptables: %v", err)
	}
	tb, err := netns.NewWithNATs("nat", public, sites)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("test bed cleanup: %v", err)
		}
	})
	var places []natPlace
	type spot struct{ ns, ip string }
	var spots []spot
	for _, h := range tb.Hosts() {
		spots = append(spots, spot{h.Name, h.Addr.String()})
		places = append(places, natPlace{kind: "public", public: h.Addr})
	}
	for _, s := range tb.Sites() {
		for _, h := range s.Inside {
			spots = append(spots, spot{h.Name, h.Addr.String()})
			places = append(places, natPlace{kind: s.Kind.String(), public: s.Public})
		}
	}
	c := newCluster(t, len(spots), func(i int, p *Peer) {
		p.netns, p.ip, p.extra = spots[i].ns, spots[i].ip, natFlags
	})
	return tb, c, places
}

func netcheckOf(p *Peer) (node.NetcheckInfo, error) {
	cl, err := p.api()
	if err != nil {
		return node.NetcheckInfo{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return cl.Netcheck(ctx)
}

// Three public peers, two behind easy NATs and two behind hard ones: each
// learns its mapping by STUN from its own QUIC socket (public; easy, at
// its NAT's address with its port kept; hard), the public ones are elected
// supernodes and every peer agrees on the set, and every member shows the
// others' reachability.
func TestNATMappingAndElection(t *testing.T) {
	_, c, places := natCluster(t, 3, []netns.SiteSpec{
		{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1},
		{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1},
	})
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	var publicIDs []string
	for i, p := range c.Peers {
		if places[i].kind == "public" {
			publicIDs = append(publicIDs, p.ID)
		}
	}
	slices.Sort(publicIDs)
	classified := make([]float64, len(c.Peers))
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for i, p := range c.Peers {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			want := places[i]
			if nc.Mapping != want.kind {
				return fmt.Errorf("%s (%s) says its mapping is %s (%d STUN servers answered)", p.Name, want.kind, nc.Mapping, len(nc.STUNServers))
			}
			if want.kind != "hard" {
				ap, err := netip.ParseAddrPort(nc.MappedAddr)
				if err != nil || ap.Addr() != want.public {
					return fmt.Errorf("%s (%s) maps to %q, want %s", p.Name, want.kind, nc.MappedAddr, want.public)
				}
				if !nc.PortPreserved {
					return fmt.Errorf("%s (%s): port not preserved at %s", p.Name, want.kind, nc.MappedAddr)
				}
			}
			classified[i] = nc.ClassifiedAfterSec
		}
		return nil
	})
	t.Logf("classified after the first STUN answer (s): %v", classified)
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for i, p := range c.Peers {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			var got []string
			for _, s := range nc.Supernodes {
				got = append(got, s.ID)
			}
			if !slices.Equal(got, publicIDs) {
				return fmt.Errorf("%s sees supernodes %v, want the public peers %v", p.Name, got, publicIDs)
			}
			wantRole := "member"
			if places[i].kind == "public" {
				wantRole = "supernode"
			}
			if nc.Role != wantRole {
				return fmt.Errorf("%s (%s) has role %s (%s), want %s", p.Name, places[i].kind, nc.Role, nc.RoleWhy, wantRole)
			}
		}
		return nil
	})
	// Everyone shows everyone's reachability as advertised.
	kindOf := map[string]string{}
	for i, p := range c.Peers {
		kindOf[p.ID] = places[i].kind
	}
	Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		for _, p := range c.Peers {
			ms, err := p.Members()
			if err != nil {
				return err
			}
			for _, m := range ms.Members {
				if m.Reach == nil || m.Reach.Mapping != kindOf[m.ID] {
					return fmt.Errorf("%s shows %s's reachability as %+v, want %s", p.Name, m.ID, m.Reach, kindOf[m.ID])
				}
				if super := m.Reach.Role == "supernode"; super != (kindOf[m.ID] == "public") {
					return fmt.Errorf("%s shows %s's role as %s", p.Name, m.ID, m.Reach.Role)
				}
			}
		}
		return nil
	})
	// A NATed peer's STUN traffic stays small.
	for i, p := range c.Peers {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, pr := range nc.Peers {
			parts = append(parts, kindOf[pr.ID]+":"+pr.Path)
		}
		t.Logf("%s %-6s stun %.1f B/s, servers %d, peers %s", p.Name, places[i].kind, nc.OverheadBps, len(nc.STUNServers), strings.Join(parts, " "))
	}
}

//go:build linux

package integration

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
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
	return natClusterWith(t, public, sites, natOptions{})
}

// natOptions change a NAT test bed.
type natOptions struct {
	// flags, when not nil, gives peer i (at a place of kind public, easy
	// or hard) its daemon flags beyond natFlags.
	flags func(i int, kind string) []string
	// before, when not nil, runs once the namespaces exist and before any
	// peer starts (to add a firewall rule, say).
	before func(tb *netns.Testbed) error
}

// natClusterWith is natCluster with opts.
func natClusterWith(t *testing.T, public int, sites []netns.SiteSpec, opts natOptions) (*netns.Testbed, *Cluster, []natPlace) {
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
	if opts.before != nil {
		if err := opts.before(tb); err != nil {
			t.Fatal(err)
		}
	}
	c := newCluster(t, len(spots), func(i int, p *Peer) {
		p.netns, p.ip, p.extra = spots[i].ns, spots[i].ip, natFlags
		if opts.flags != nil {
			p.extra = append(slices.Clone(natFlags), opts.flags(i, places[i].kind)...)
		}
	})
	return tb, c, places
}

// peersOfKind are the peers of c at places of kind (public, easy, hard),
// in order.
func peersOfKind(c *Cluster, places []natPlace, kind string) []*Peer {
	var out []*Peer
	for i, p := range c.Peers {
		if places[i].kind == kind {
			out = append(out, p)
		}
	}
	return out
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

func reservationsOf(nc node.NetcheckInfo) []string {
	var out []string
	for _, r := range nc.Reservations {
		out = append(out, r.Supernode)
	}
	slices.Sort(out)
	return out
}

// Hard-NAT peers can be reached only through circuits: each NATed peer
// holds reservations on two supernodes and advertises the circuits, two
// hard-NAT peers reach each other through one, and when a supernode that
// holds a reservation is killed, the reservation is made elsewhere and the
// new circuit address reaches the group.
func TestNATRelaysAndSupernodeLoss(t *testing.T) {
	begun := time.Now()
	_, c, places := natCluster(t, 3, []netns.SiteSpec{
		{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1}, {Kind: netns.Easy, Inside: 1},
	})
	started := time.Since(begun)
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	var natted []*Peer
	for i, p := range c.Peers {
		if places[i].kind != "public" {
			natted = append(natted, p)
		}
	}
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for _, p := range natted {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if len(nc.Reservations) < 2 {
				return fmt.Errorf("%s (%s) holds %d reservations (supernodes %d)", p.Name, nc.Mapping, len(nc.Reservations), len(nc.Supernodes))
			}
			circuits := 0
			for _, a := range nc.TCP {
				if strings.Contains(a, "/p2p-circuit") {
					circuits++
				}
			}
			if circuits < 2 {
				return fmt.Errorf("%s advertises %d circuit TCP addresses: %v", p.Name, circuits, nc.TCP)
			}
		}
		return nil
	})
	t.Logf("every NATed peer held two reservations %.1f s after the group started (starting took %.1f s)",
		time.Since(begun).Seconds()-started.Seconds(), started.Seconds())
	h0, h1 := natted[0], natted[1]
	start := time.Now()
	pingUntilAnswered(t, h0, h1.ID, 15*time.Second, 100*time.Millisecond)
	t.Logf("hard to hard: first ping answered %.2f s after both held reservations", time.Since(start).Seconds())
	nc, err := netcheckOf(h0)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range nc.Peers {
		if pr.ID == h1.ID && pr.Path != "relayed" && pr.Path != "ron" {
			t.Fatalf("hard to hard path is %s; want relayed (or RON)", pr.Path)
		}
	}

	// Kill a supernode that holds one of h0's reservations.
	before := reservationsOf(nc)
	var victim *Peer
	for _, p := range c.Peers {
		if p.ID == before[0] {
			victim = p
		}
	}
	if victim == nil {
		t.Fatalf("reservation on %s, no peer of the cluster", before[0])
	}
	victim.Kill9()
	killed := time.Now()
	Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		nc, err := netcheckOf(h0)
		if err != nil {
			return err
		}
		got := reservationsOf(nc)
		if len(got) < 2 || slices.Contains(got, victim.ID) {
			return fmt.Errorf("%s holds %v after %s died", h0.Name, got, victim.Name)
		}
		return nil
	})
	restored := time.Since(killed)
	// The new circuit reaches the others through membership.
	other := c.Peers[0]
	if other == victim {
		other = c.Peers[1]
	}
	Eventually(t, 20*time.Second, 100*time.Millisecond, func() error {
		ms, err := other.Members()
		if err != nil {
			return err
		}
		for _, m := range ms.Members {
			if m.ID != h0.ID {
				continue
			}
			relays := map[string]bool{}
			for _, a := range m.Addrs {
				if before, _, ok := strings.Cut(a, "/p2p-circuit"); ok {
					relays[before[strings.LastIndex(before, "/")+1:]] = true
				}
			}
			if len(relays) < 2 || relays[victim.ID] {
				return fmt.Errorf("%s advertises circuits through %v (%s died)", h0.Name, relays, victim.ID)
			}
			return nil
		}
		return fmt.Errorf("%s does not list %s", other.Name, h0.Name)
	})
	t.Logf("supernode killed: reservations restored after %.2f s, new circuits advertised after %.2f s",
		restored.Seconds(), time.Since(killed).Seconds())
}

// Pairs that can go direct do: an easy-NAT peer reaches public peers and
// the other easy-NAT peer over a direct (possibly hole-punched)
// connection, while hard-NAT pairs stay on circuits and the pair policy
// keeps their punch attempts few.
func TestNATEasyPairsGoDirect(t *testing.T) {
	_, c, places := natCluster(t, 2, []netns.SiteSpec{
		{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}, {Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1},
	})
	start := time.Now()
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	kindOf := map[string]string{}
	for i, p := range c.Peers {
		kindOf[p.ID] = places[i].kind
	}
	// Every pair talks: each peer pings every other once, so that a pair
	// with no connection yet makes one (through a circuit, if that is all
	// there is).
	pingAll := func() {
		for _, from := range c.Peers {
			cl, err := from.api()
			if err != nil {
				continue
			}
			for _, to := range c.Peers {
				if to == from {
					continue
				}
				id, _ := peer.Decode(to.ID)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, _ = cl.Ping(ctx, id, 2*time.Second)
				cancel()
			}
		}
	}
	Eventually(t, 40*time.Second, 500*time.Millisecond, func() error {
		pingAll()
		for i, p := range c.Peers {
			if places[i].kind != "easy" {
				continue
			}
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			for _, pr := range nc.Peers {
				k := kindOf[pr.ID]
				if (k == "public" || k == "easy") && pr.Path != "direct" && pr.Path != "hole-punched" {
					return fmt.Errorf("%s (easy) reaches a %s peer by %s", p.Name, k, pr.Path)
				}
			}
		}
		return nil
	})
	t.Logf("easy-easy and easy-public pairs direct %.1f s after start", time.Since(start).Seconds())
	var upgrades []float64
	relayedFirst := 0
	for i, p := range c.Peers {
		if places[i].kind != "easy" {
			continue
		}
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, pr := range nc.Peers {
			if k := kindOf[pr.ID]; k == "public" || k == "easy" {
				upgrades = append(upgrades, pr.UpgradeSec)
				if pr.UpgradeSec > 0 {
					relayedFirst++
				}
			}
		}
	}
	slices.Sort(upgrades)
	t.Logf("FIGURE relayed to direct, easy-easy and easy-public pairs seen from the easy side: %d pairs, %d relayed first; median %.2f s, p95 %.2f s, max %.2f s (0: direct from the start)",
		len(upgrades), relayedFirst, upgrades[len(upgrades)/2], upgrades[len(upgrades)*95/100], upgrades[len(upgrades)-1])
	for i, p := range c.Peers {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, pr := range nc.Peers {
			parts = append(parts, kindOf[pr.ID]+":"+pr.Path)
		}
		t.Logf("%s %-6s punches %+v, peers %s", p.Name, places[i].kind, nc.Punches, strings.Join(parts, " "))
		// At most 3 attempts per pair in 10 minutes, and hard pairs none.
		if nc.Punches.Attempts > int64(3*(len(c.Peers)-1)) {
			t.Errorf("%s made %d punch attempts with %d peers", p.Name, nc.Punches.Attempts, len(c.Peers)-1)
		}
		if places[i].kind == "hard" {
			for _, pr := range nc.Peers {
				if kindOf[pr.ID] == "hard" && pr.Path != "relayed" && pr.Path != "ron" {
					t.Errorf("%s (hard) reaches a hard peer by %s", p.Name, pr.Path)
				}
			}
		}
	}
}

// natSwarmSize is the file of TestNATSwarm: 8 MiB by default, 32 MiB for
// the figure (-nat.swarm-mib 32).
var natSwarmSize = flag.Int("nat.swarm-mib", 8, "MiB shared in TestNATSwarm")

// A swarm across NATs: 2 public, 3 easy-NAT and 3 hard-NAT peers; a
// hard-NAT peer seeds, everyone else fetches by infohash. Every copy is
// byte-identical; the time is set beside the bound for the upload caps,
// and the bytes the supernodes relayed are reported beside what the pairs
// that cannot go direct (those with a hard-NAT end and no public one)
// could need.
func TestNATSwarm(t *testing.T) {
	_, c, places := natCluster(t, 2, []netns.SiteSpec{
		{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1},
		{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1},
	})
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	// Reservations first: a hard-NAT seeder is reachable only through them.
	var seeder *Peer
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for i, p := range c.Peers {
			if places[i].kind == "public" {
				continue
			}
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if nc.Mapping != places[i].kind || len(nc.Reservations) < 2 {
				return fmt.Errorf("%s: mapping %s, %d reservations", p.Name, nc.Mapping, len(nc.Reservations))
			}
			if places[i].kind == "hard" && seeder == nil {
				seeder = p
			}
		}
		return nil
	})
	size := int64(*natSwarmSize) << 20
	const seedUp, peerUp = 8 << 20, 4 << 20 // bytes per second
	src := filepath.Join(t.TempDir(), "data.bin")
	sum, err := swarm.WriteSample(src, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scl, err := seeder.api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := scl.Share(ctx, node.ShareRequest{Path: src, UploadRate: seedUp})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, p := range c.Peers {
		if p == seeder {
			continue
		}
		cl, err := p.api()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.StartGet(ctx, node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(p.Home, "downloads"), UploadRate: peerUp}); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	for _, p := range c.Peers {
		if p == seeder {
			continue
		}
		st := swarmDone(t, p, sh.InfoHash, 5*time.Minute)
		got, err := swarm.FileSHA1(st.Path)
		if err != nil || got != sum {
			t.Fatalf("%s: %s differs from the original (%v)", p.Name, st.Path, err)
		}
	}
	took := time.Since(start).Seconds()
	n := float64(len(c.Peers) - 1)
	bound := max(float64(size)/seedUp, n*float64(size)/(seedUp+n*peerUp))
	var relayed int64
	for i, p := range c.Peers {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		relayed += nc.Relayed.Bytes
		var parts []string
		for _, pr := range nc.Peers {
			parts = append(parts, pr.Path)
		}
		t.Logf("%s %-6s relayed %d B, paths %s", p.Name, places[i].kind, nc.Relayed.Bytes, strings.Join(parts, ","))
	}
	t.Logf("FIGURE swarm across NATs (2 public, 3 easy, 3 hard; hard-NAT seeder; %d MiB; seed %d MiB/s, peers %d MiB/s): all copies identical; %.1f s, bound %.1f s, ratio %.2f; supernodes relayed %.1f MiB (%.2f of the file size)",
		size>>20, seedUp>>20, peerUp>>20, took, bound, took/bound, float64(relayed)/(1<<20), float64(relayed)/float64(size))
}

// A web server exposed by a peer behind a hard NAT is reached by name
// from a peer behind another hard NAT: no direct path exists, so the
// tunnel's stream goes through an intermediate, a RON one-hop forward or
// a supernode's relay, whichever OpenStream takes. Backend and client
// each live inside their peer's namespace.
func TestNATTunnelByNameThroughARelay(t *testing.T) {
	tb, c, places := natCluster(t, 3, []netns.SiteSpec{{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1}})
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	hard := peersOfKind(c, places, "hard")
	exposer, user := hard[0], hard[1]
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for _, p := range hard {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if len(nc.Reservations) < 1 {
				return fmt.Errorf("%s holds no reservation yet", p.Name)
			}
		}
		return nil
	})
	var ln net.Listener
	if err := tb.DoIn(exposer.netns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(exposer.ip, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "behind a hard NAT: %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	if code, _, errOut := runPeer(t, "expose", "nat-web", ln.Addr().String(), "--home", exposer.Home); code != 0 {
		t.Fatalf("expose: exit %d: %s", code, errOut)
	}
	code, out, errOut := runPeer(t, "forward", "nat-web", "--listen", net.JoinHostPort(user.ip, "0"), "--home", user.Home, "--json")
	if code != 0 {
		t.Fatalf("forward: exit %d: %s", code, errOut)
	}
	var fw node.ServiceDone
	if err := json.Unmarshal([]byte(out), &fw); err != nil || fw.Listen == "" {
		t.Fatalf("forward answered %s (%v)", out, err)
	}
	get := func(path string) (string, error) {
		var body []byte
		err := tb.DoIn(user.netns, func() error {
			c, err := net.DialTimeout("tcp", fw.Listen, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: nat-web\r\n\r\n", path)
			body, err = io.ReadAll(c)
			return err
		})
		return string(body), err
	}
	Eventually(t, 20*time.Second, 200*time.Millisecond, func() error {
		body, err := get("/via-relay")
		if err != nil {
			return err
		}
		if !strings.HasSuffix(body, "behind a hard NAT: /via-relay") {
			return fmt.Errorf("answer %q", body)
		}
		return nil
	})
	nc, err := netcheckOf(user)
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range nc.Peers {
		if pr.ID == mustID(t, exposer) {
			t.Logf("the user reaches the exposer by %q", pr.Path)
			if pr.Path == "direct" || pr.Path == "hole-punched" {
				t.Errorf("two hard-NAT peers reach each other %s", pr.Path)
			}
		}
	}
}

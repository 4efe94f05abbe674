//go:build linux

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/node"
)

// peerReachTo is how nc reaches the member id.
func peerReachTo(nc node.NetcheckInfo, id string) (node.PeerReach, bool) {
	for _, pr := range nc.Peers {
		if pr.ID == id {
			return pr, true
		}
	}
	return node.PeerReach{}, false
}

// countInLog counts the lines of p's log that hold every one of parts.
func countInLog(t *testing.T, p *Peer, parts ...string) int {
	t.Helper()
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		all := true
		for _, s := range parts {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

// Two peers behind easy NATs, with our own upgrade dials off on every
// peer (--no-upgrade-dials), meet through a circuit; the pair must end on
// a direct connection, with no upgrade dial of our own in any log.
//
// DCUtR has two phases. The end that accepted the inbound circuit first
// dials the other's public addresses; then, if that failed, both ends
// exchange addresses over the circuit (CONNECT, SYNC) and dial each other
// at once, the synchronized punch. Here the first phase alone succeeds:
// the dialing end tried the other's mapping before it fell back to the
// circuit, and that dial, dropped by the far NAT, opened its own NAT's
// mapping for the answer. So:
//
//   - direct-dial: the pair as it comes: it must go direct, but not
//     necessarily by DCUtR (another dial of the pair's, crossing the
//     other end's, sometimes wins), so this one only reports.
//   - punch: until DCUtR's punch has begun, each NAT router drops what
//     its inside peer sends to the other site, so that no mapping is
//     opened before it and no other dial can win; DCUtR's first phase
//     then fails, and the tracer must count a success of the
//     synchronized punch (its own retries included), after the pair was
//     relayed. This is the assertion that fails when DCUtR does not work.
func TestNATDCUtRPunchAlone(t *testing.T) {
	t.Run("direct-dial", func(t *testing.T) { dcutrAlone(t, false) })
	t.Run("punch", func(t *testing.T) { dcutrAlone(t, true) })
}

func dcutrAlone(t *testing.T, blockEarly bool) {
	var rules [][]string // router namespace, then the iptables rule
	opts := natOptions{flags: func(int, string) []string { return []string{"--no-upgrade-dials"} }}
	var tb *netns.Testbed
	if blockEarly {
		opts.before = func(bed *netns.Testbed) error {
			tb = bed
			sites := bed.Sites()
			for k, s := range sites {
				other := sites[1-k]
				rules = append(rules, []string{s.Router, "FORWARD", "-s", s.Inside[0].Addr.String(), "-d", other.Public.String(), "-j", "DROP"})
			}
			for _, r := range rules {
				if out, err := bed.CommandIn(r[0], "iptables", append([]string{"-w", "-I"}, r[1:]...)...).CombinedOutput(); err != nil {
					return fmt.Errorf("iptables in %s: %v: %s", r[0], err, out)
				}
			}
			return nil
		}
	}
	_, c, places := natClusterWith(t, 2, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}}, opts)
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	easy := peersOfKind(c, places, "easy")
	a, b := easy[0], easy[1]
	for _, p := range c.Peers {
		if n := countInLog(t, p, "no upgrade dials of our own"); n != 1 {
			t.Fatalf("%s logs the no-upgrade-dials warning %d times, want once", p.Name, n)
		}
	}
	// Both classified easy, each holding reservations, and each knowing
	// the other's advert: the pair policy lets them punch.
	Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		for i, p := range easy {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if nc.Mapping != "easy" || len(nc.Reservations) < 2 {
				return fmt.Errorf("%s: mapping %s, %d reservations", p.Name, nc.Mapping, len(nc.Reservations))
			}
			other := easy[1-i]
			if pr, ok := peerReachTo(nc, other.ID); !ok || pr.Mapping != "easy" {
				return fmt.Errorf("%s sees %s as %+v", p.Name, other.Name, pr)
			}
		}
		return nil
	})
	bID, err := peer.Decode(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := a.api()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// a pings b until it answers (the pair may have met already): the
	// first connection is a circuit, as a direct dial to b's mapping is
	// dropped by b's NAT.
	pingUntilAnswered(t, a, b.ID, 20*time.Second, 200*time.Millisecond)
	answered := time.Since(start)
	if blockEarly {
		// Relayed now, and no direct path can be while the rules hold.
		// They stay until DCUtR's first phase has failed and its punch
		// has begun (its dials retry for 10 s), so that no dial but the
		// punch's can open a mapping.
		// A ping may go by RON's forwarding and leave the pair without a
		// connection; the pair's own traffic (membership, routing) makes
		// one in a few seconds.
		Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
			nc, err := netcheckOf(a)
			if err != nil {
				return err
			}
			switch pr, _ := peerReachTo(nc, b.ID); pr.Path {
			case "relayed":
				return nil
			case "direct", "hole-punched":
				return permanentError{fmt.Errorf("%s reaches %s by %s with the rules on, want relayed", a.Name, b.Name, pr.Path)}
			default:
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				_, _ = cl.Ping(ctx, bID, 2*time.Second)
				return fmt.Errorf("%s reaches %s by %s", a.Name, b.Name, pr.Path)
			}
		})
		t.Logf("relayed %.2f s after the first ping was sent", time.Since(start).Seconds())
		Eventually(t, 30*time.Second, 50*time.Millisecond, func() error {
			var ds []nat.DCUtRStats
			for _, p := range easy {
				nc, err := netcheckOf(p)
				if err != nil {
					return err
				}
				if nc.Punches.DCUtR.Punches > 0 {
					return nil
				}
				ds = append(ds, nc.Punches.DCUtR)
			}
			return fmt.Errorf("no punch begun yet: %+v", ds)
		})
		for _, r := range rules {
			if out, err := tb.CommandIn(r[0], "iptables", append([]string{"-w", "-D"}, r[1:]...)...).CombinedOutput(); err != nil {
				t.Fatalf("iptables -D in %s: %v: %s", r[0], err, out)
			}
		}
		t.Logf("punch begun and rules lifted %.2f s after the ping was sent", time.Since(start).Seconds())
	}
	var last [2]node.NetcheckInfo
	Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		for i, p := range easy {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			last[i] = nc
		}
		for i, p := range easy {
			other := easy[1-i]
			pr, _ := peerReachTo(last[i], other.ID)
			if pr.Path != "hole-punched" && pr.Path != "direct" {
				return fmt.Errorf("%s reaches %s by %s (upgrade %.2f s); DCUtR %+v", p.Name, other.Name, pr.Path, pr.UpgradeSec, last[i].Punches.DCUtR)
			}
		}
		d0, d1 := last[0].Punches.DCUtR, last[1].Punches.DCUtR
		if blockEarly && d0.PunchSuccesses+d1.PunchSuccesses == 0 {
			return fmt.Errorf("direct, but not by DCUtR's synchronized punch: %s %+v, %s %+v", a.Name, d0, b.Name, d1)
		}
		return nil
	})
	direct := time.Since(start)
	for i, p := range easy {
		js, _ := json.Marshal(last[i].Punches)
		pr, _ := peerReachTo(last[i], easy[1-i].ID)
		t.Logf("%s: path to %s %s, relayed to direct %.2f s; punches %s", p.Name, easy[1-i].Name, pr.Path, pr.UpgradeSec, js)
		if blockEarly && pr.UpgradeSec <= 0 {
			t.Errorf("%s: upgrade_s %.2f, want the pair relayed first (a circuit, then direct)", p.Name, pr.UpgradeSec)
		}
	}
	if !blockEarly && last[0].Punches.DCUtR.Successes()+last[1].Punches.DCUtR.Successes() == 0 {
		// Not DCUtR's doing: another dial (a stream opened on the
		// circuit asks the swarm for a direct connection too) crossed
		// the other end's and went through first.
		t.Logf("direct, but by no DCUtR success: %s %+v, %s %+v", a.Name, last[0].Punches, b.Name, last[1].Punches)
	}
	phase := "DCUtR's synchronized punch"
	switch d0, d1 := last[0].Punches.DCUtR, last[1].Punches.DCUtR; {
	case d0.Successes()+d1.Successes() == 0:
		phase = "another dial (no DCUtR success)"
	case d0.PunchSuccesses+d1.PunchSuccesses == 0:
		phase = "DCUtR's direct-dial phase"
	}
	pa, _ := peerReachTo(last[0], b.ID)
	pb, _ := peerReachTo(last[1], a.ID)
	t.Logf("FIGURE DCUtR alone (%s), easy to easy: first ping answered %.2f s after it was sent, both ends direct %.2f s after; relayed to direct %.2f s (%s), %.2f s (%s); by %s",
		t.Name(), answered.Seconds(), direct.Seconds(), pa.UpgradeSec, a.Name, pb.UpgradeSec, b.Name, phase)
	// Our own dials were off on every peer.
	for _, p := range c.Peers {
		if n := countInLog(t, p, "direct dial over a relayed pair"); n != 0 {
			t.Errorf("%s logged %d upgrade dials of its own with --no-upgrade-dials", p.Name, n)
		}
	}
}

// refusalLog is what a member logs, once, about a member that claims a
// public address nobody could dial back (nat.Reach.noteUnverified), after
// the claim went unvouched for 30 s.
const refusalLog = "not electing a member that claims a public address nobody could reach"

// A peer behind an easy NAT lies (--test-claim-public): its advert says
// public and dialed back. Nobody can dial it back, so nobody vouches for
// it: in a group of 5, with 3 seats and only the 2 honest public peers
// eligible, the liar would take the third seat if its claim counted. It
// never appears in any member's supernode set (watched throughout), the
// honest public peers are elected by all, and every member's log holds
// the refusal once for the liar and never for an honest peer.
func TestNATLyingPeerNotElected(t *testing.T) {
	const liarAt = 2 // the first inside peer: 2 public peers come first
	_, c, places := natClusterWith(t, 2, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}},
		natOptions{flags: func(i int, _ string) []string {
			if i == liarAt {
				return []string{"--test-claim-public"}
			}
			return nil
		}})
	start := time.Now()
	liar := c.Peers[liarAt]
	if places[liarAt].kind != "easy" {
		t.Fatalf("the liar is at a %s place", places[liarAt].kind)
	}
	if n := countInLog(t, liar, "this peer claims to be public"); n != 1 {
		t.Fatalf("%s logs the lie's warning %d times, want once", liar.Name, n)
	}
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	var publicIDs []string
	for _, p := range peersOfKind(c, places, "public") {
		publicIDs = append(publicIDs, p.ID)
	}
	slices.Sort(publicIDs)
	// watch fails the test if any member elects the liar, and returns
	// nil once every member has elected exactly the honest public peers.
	watch := func() error {
		var notYet error
		for _, p := range c.Peers {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			var got []string
			for _, s := range nc.Supernodes {
				if s.ID == liar.ID {
					return permanentError{fmt.Errorf("%s elected the liar %s: supernodes %v", p.Name, liar.Name, nc.Supernodes)}
				}
				got = append(got, s.ID)
			}
			if p == liar && nc.Role == "supernode" {
				return permanentError{fmt.Errorf("the liar holds the supernode role: %s", nc.RoleWhy)}
			}
			if !slices.Equal(got, publicIDs) && notYet == nil {
				notYet = fmt.Errorf("%s sees supernodes %v, want the public peers %v", p.Name, got, publicIDs)
			}
		}
		return notYet
	}
	Eventually(t, 30*time.Second, 200*time.Millisecond, watch)
	elected := time.Since(start)
	// The lie reaches the group: the others see it public and dialed.
	Eventually(t, 10*time.Second, 200*time.Millisecond, func() error {
		for _, p := range c.Peers {
			ms, err := p.Members()
			if err != nil {
				return err
			}
			for _, m := range ms.Members {
				if m.ID == liar.ID && (m.Reach == nil || m.Reach.Mapping != "public" || !m.Reach.Reachable || m.Reach.Role == "supernode") {
					return fmt.Errorf("%s shows the liar's reachability as %+v, want the lie: public, reachable, member", p.Name, m.Reach)
				}
			}
		}
		return nil
	})
	// The refusal, once per member, after the claim's 30 s of grace; the
	// liar is never elected meanwhile.
	Eventually(t, 60*time.Second, 500*time.Millisecond, func() error {
		if err := watch(); err != nil {
			var pe permanentError
			if errors.As(err, &pe) {
				return err
			}
		}
		for _, p := range c.Peers {
			if n := countInLog(t, p, refusalLog, "peer="+liar.ID); n != 1 {
				return fmt.Errorf("%s logs the refusal of the liar %d times", p.Name, n)
			}
		}
		return nil
	})
	refused := time.Since(start)
	// A few more election rounds: still once, still not elected, and no
	// honest peer refused.
	Holds(t, 5*time.Second, 500*time.Millisecond, watch)
	for _, p := range c.Peers {
		if n := countInLog(t, p, refusalLog, "peer="+liar.ID); n != 1 {
			t.Errorf("%s logs the refusal of the liar %d times, want once", p.Name, n)
		}
		for _, q := range c.Peers {
			if q == liar {
				continue
			}
			if n := countInLog(t, p, refusalLog, "peer="+q.ID); n != 0 {
				t.Errorf("%s logs the refusal of the honest %s (%s) %d times", p.Name, q.Name, places[slices.Index(c.Peers, q)].kind, n)
			}
		}
	}
	nc, err := netcheckOf(liar)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE lying peer: the honest public peers elected by all %.1f s after the group started, the liar refused in every log %.1f s after; the liar says of itself: %s",
		elected.Seconds(), refused.Seconds(), nc.RoleWhy)
}

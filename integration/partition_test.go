package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
)

// Timing of the partition test, as the issue states it.
const (
	partHold  = 30 * time.Second // how long the 4|4 split lasts
	partBound = 30 * time.Second // after the heal: one ring, all alive, all records
	// partObserve is how long the test keeps watching after the heal when
	// the bound is missed, so that the failure says whether the system
	// gets there late or never.
	partObserve = 90 * time.Second
)

// partWrite is one put of the scenario and what the writer's daemon
// stamped on it.
type partWrite struct {
	key, value string
	writer     *Peer
	seq        uint64 // as read back through the writer
}

// partCut cuts (or, with heal, heals) every link between a host of side a
// and a host of side b.
func partCut(tb *netns.Testbed, a, b []int, heal bool) error {
	for _, i := range a {
		for _, j := range b {
			op := tb.Cut
			if heal {
				op = tb.Heal
			}
			if err := op(i, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// partSplitSeen is a condition: every peer of a sees the peers of a alive
// and those of b dead, and the other way round.
func partSplitSeen(a, b []*Peer) func() error {
	return func() error {
		for _, side := range [][2][]*Peer{{a, b}, {b, a}} {
			own, other := side[0], side[1]
			for _, obs := range own {
				ms, err := obs.Members()
				if err != nil {
					return err
				}
				state := map[string]string{}
				for _, m := range ms.Members {
					state[m.ID] = m.State
				}
				for _, p := range own {
					if state[p.ID] != "alive" {
						return fmt.Errorf("%s sees %s (same side) as %q", obs.Name, p.Name, state[p.ID])
					}
				}
				for _, p := range other {
					if state[p.ID] == "alive" {
						return fmt.Errorf("%s still sees %s (other side) alive", obs.Name, p.Name)
					}
				}
			}
		}
		return nil
	}
}

// partPut writes key=value through w, retrying while its side of the ring
// settles, then reads it back through w until w answers with this value,
// and returns the put with the seq w's daemon gave it.
func partPut(t *testing.T, w *Peer, key, value string) partWrite {
	t.Helper()
	pw := partWrite{key: key, value: value, writer: w}
	put := false
	Eventually(t, 20*time.Second, pollInterval, func() error {
		cl, err := w.api()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if !put {
			if _, err := cl.Put(ctx, node.PutRequest{Key: key, Value: value, TTL: "1h"}); err != nil {
				return fmt.Errorf("%s: put %s: %w", w.Name, key, err)
			}
			put = true
		}
		g, err := cl.KVGet(ctx, key)
		if err != nil {
			return fmt.Errorf("%s: get %s after its put: %w", w.Name, key, err)
		}
		if g.Value != value {
			return fmt.Errorf("%s: get %s after its put: %q, want %q", w.Name, key, g.Value, value)
		}
		pw.seq = g.Seq
		return nil
	})
	return pw
}

// partRecords is a condition: every peer reads every key of want with the
// value and seq of its newest write. The error lists every wrong read.
func partRecords(peers []*Peer, want map[string]partWrite) func() error {
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return func() error {
		var mu sync.Mutex
		var bad []string
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Go(func() {
				var mine []string
				cl, err := p.api()
				if err != nil {
					mine = append(mine, err.Error())
				}
				for _, k := range keys {
					if cl == nil {
						break
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					g, err := cl.KVGet(ctx, k)
					cancel()
					w := want[k]
					switch {
					case err != nil:
						mine = append(mine, fmt.Sprintf("%s: get %s: %v", p.Name, k, err))
					case g.Value != w.value || g.Seq != w.seq:
						mine = append(mine, fmt.Sprintf("%s reads %s = %.12s… seq %d, want %.12s… seq %d (written by %s)",
							p.Name, k, g.Value, g.Seq, w.value, w.seq, w.writer.Name))
					}
				}
				mu.Lock()
				bad = append(bad, mine...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if len(bad) > 0 {
			slices.Sort(bad)
			return fmt.Errorf("%d wrong reads of %d:\n  %s", len(bad), len(peers)*len(keys), strings.Join(bad, "\n  "))
		}
		return nil
	}
}

// partDump logs each peer's `peer ring --json` and `peer members --json`,
// the evidence of what the ring and the group look like.
func partDump(t *testing.T, peers []*Peer) {
	t.Helper()
	for _, p := range peers {
		for _, verb := range []string{"ring", "members"} {
			code, out, errOut := runPeer(t, "--home", p.Home, "--json", verb)
			t.Logf("%s: peer %s --json (exit %d):\n%s%s", p.Name, verb, code, out, errOut)
		}
	}
}

// The partition: 8 peers in the testbed split 4|4 for 30 s, with
// records written on both sides, then healed. Within 30 s there is one
// ring again, every member sees every other alive, and every record is
// readable from every peer with its newest value.
//
// What "highest sequence wins" means here (dht/record): a value record is
// owned by the first peer that claimed its key, only the owner replaces it,
// by a strictly higher Seq, and a put stamps Seq with the writer's clock in
// nanoseconds. With 8 peers and 8 replicas every peer holds every record
// before the split, and each side's puts during the split reach only that
// side's 4 peers. Two kinds of keys therefore have two versions in the
// group at the heal:
//   - part/pre/*: put before the split by a peer of one side (peer-0 for
//     two keys, peer-4 for two) and overwritten during it by the same
//     peer; the other side still holds the old value, and the owner's
//     higher Seq wins;
//   - part/both/*: claimed during the split by a peer of one side, then
//     later by a peer of the other side, which knows nothing of the first
//     claim. Both claims are within two minutes of each other and of the
//     heal, the same moment for record.Replaces, so the earlier claim wins
//     on every replica and the later one is dropped.
//
// After the heal every peer must read the winning version (the value and
// the Seq its writer stamped), wherever the key's owner lands on the
// merged ring. part/a/* and part/b/* are put on one side only and must
// reach the other.
func TestPartitionHealsToOneRing(t *testing.T) {
	tb, c := testbedCluster(t, 8)
	start := time.Now()
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))
	t.Logf("8 peers formed the ideal ring in %.1f s", time.Since(start).Seconds())

	hostsA, hostsB := []int{0, 1, 2, 3}, []int{4, 5, 6, 7}
	sideA, sideB := c.Peers[:4], c.Peers[4:]
	want := map[string]partWrite{}
	// The writer of each part/pre key: peer-0 (side A) for 0 and 1,
	// peer-4 (side B) for 2 and 3.
	preWriter := func(i int) *Peer { return c.Peers[4*(i/2)] }
	for i := range 4 {
		k := fmt.Sprintf("part/pre/%d", i)
		want[k] = partPut(t, preWriter(i), k, fmt.Sprintf("before-split-%d-%x", i, time.Now().UnixNano()))
	}

	if err := partCut(tb, hostsA, hostsB, false); err != nil {
		t.Fatal(err)
	}
	splitAt := time.Now()
	// Heal on every way out of the test, so a failure here does not leave
	// the daemons split while the cleanup collects their logs.
	healed := false
	defer func() {
		if !healed {
			_ = partCut(tb, hostsA, hostsB, true)
		}
	}()

	// Memberlist declares a member dead once others confirm the
	// suspicion, or at the longest suspicion timeout (Lifeguard: 6 times
	// the base, about 24 s for 8 members) when none does: alone on 2
	// cores the sides see the split in about 14-17 s; beside the other
	// integration tests (more of them since the browser and distribute
	// tests) it has taken 34.5 s, and once more than 40 s. The writes wait
	// for it, and the hold is then at least partHold.
	Eventually(t, 75*time.Second, pollInterval, partSplitSeen(sideA, sideB))
	t.Logf("split: each side sees the other dead %.1f s after the cut", time.Since(splitAt).Seconds())

	// Writes during the split: each part/pre key by its owner.
	val := func(tag string, i int) string {
		return fmt.Sprintf("%s-%d-%x", tag, i, time.Now().UnixNano())
	}
	for i := range 4 {
		k := fmt.Sprintf("part/pre/%d", i)
		old := want[k]
		want[k] = partPut(t, preWriter(i), k, val("split-overwrite", i))
		if want[k].seq <= old.seq {
			t.Fatalf("%s: the overwrite got seq %d, not above the first put's %d", k, want[k].seq, old.seq)
		}
	}
	for i := range 4 {
		for _, s := range []struct {
			tag  string
			side []*Peer
		}{{"a", sideA}, {"b", sideB}} {
			k := fmt.Sprintf("part/%s/%d", s.tag, i)
			want[k] = partPut(t, s.side[i], k, val("only-"+s.tag, i))
		}
	}
	const bothKeys = 6
	first := map[string]partWrite{}
	for i := range bothKeys {
		early := sideA
		if i%2 == 1 {
			early = sideB
		}
		k := fmt.Sprintf("part/both/%d", i)
		first[k] = partPut(t, early[i%4], k, val("earlier", i))
	}
	for i := range bothKeys {
		late := sideB
		if i%2 == 1 {
			late = sideA
		}
		k := fmt.Sprintf("part/both/%d", i)
		later := partPut(t, late[(i+1)%4], k, val("later", i))
		if later.seq <= first[k].seq {
			t.Fatalf("%s: the later put got seq %d, not above the earlier's %d", k, later.seq, first[k].seq)
		}
		want[k] = first[k] // the earlier claim of the same moment wins
	}
	// Both sides still hold their own version of the contested keys.
	for k, w := range first {
		cl, err := w.writer.api()
		if err != nil {
			t.Fatal(err)
		}
		g, err := cl.KVGet(context.Background(), k)
		if err != nil || g.Seq != w.seq {
			t.Fatalf("%s: %s reads %+v (%v) during the split, want its own write seq %d", k, w.writer.Name, g, err, w.seq)
		}
	}
	wrote := time.Since(splitAt)
	t.Logf("split: %d records written on both sides by %.1f s into the split", len(want)+len(first), wrote.Seconds())
	if wrote > partHold {
		t.Logf("split: the writes took longer than the %v hold; healing now", partHold)
	}
	// The deliberate hold, spent watching each side close its own ring
	// (logged, for the record: the issue asks nothing of the split rings).
	holdEnd := splitAt.Add(partHold)
	var sidesRing time.Duration
	for time.Now().Before(holdEnd) {
		if sidesRing == 0 && idealRing(sideA)() == nil && idealRing(sideB)() == nil {
			sidesRing = time.Since(splitAt)
			t.Logf("split: each side is an ideal ring of its own %.1f s after the cut", sidesRing.Seconds())
		}
		time.Sleep(min(pollInterval, time.Until(holdEnd)))
	}
	if sidesRing == 0 {
		t.Logf("split: the sides did not both become ideal rings of their own within the %v hold", partHold)
	}

	// The clock starts when the first link heals: the 32 rule deletions
	// take a few seconds, and the bound covers them.
	healAt := time.Now()
	if err := partCut(tb, hostsA, hostsB, true); err != nil {
		t.Fatal(err)
	}
	healed = true
	t.Logf("healed after a split of %.1f s (the heal itself took %.1f s)",
		healAt.Sub(splitAt).Seconds(), time.Since(healAt).Seconds())

	// Watch the three conditions together, each until it first holds.
	conds := []struct {
		name string
		cond func() error
		at   time.Duration
		last error
	}{
		{name: "one ring", cond: idealRing(c.Peers)},
		{name: "all alive", cond: c.Expect(nil)},
		{name: "all records", cond: partRecords(c.Peers, want)},
	}
	pending := len(conds)
	for pending > 0 && time.Since(healAt) < partObserve {
		for i := range conds {
			cd := &conds[i]
			if cd.at != 0 {
				continue
			}
			err := cd.cond()
			if pe := (permanentError{}); errors.As(err, &pe) {
				t.Fatalf("%s: %v", cd.name, err)
			}
			if err == nil {
				cd.at = time.Since(healAt)
				pending--
				t.Logf("after the heal: %s at %.1f s", cd.name, cd.at.Seconds())
			}
			cd.last = err
		}
		time.Sleep(pollInterval)
	}
	fig := func(d time.Duration) string {
		if d == 0 {
			return fmt.Sprintf("never (not within %v)", partObserve)
		}
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	t.Logf("partition: one ring after %s, all alive after %s, all records after %s",
		fig(conds[0].at), fig(conds[1].at), fig(conds[2].at))
	failed := false
	for _, cd := range conds {
		if cd.at == 0 || cd.at > partBound {
			failed = true
			t.Errorf("%s: not within %v of the heal (%s); last error: %v", cd.name, partBound, fig(cd.at), cd.last)
		}
	}
	if failed {
		partDump(t, c.Peers)
	}
}

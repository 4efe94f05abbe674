package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/peer-overlay/peer/node"
)

// soakSweepMaxFailures: a final sweep that saw this many failed gets has
// made its point and stops, since each can take a lookup timeout.
const soakSweepMaxFailures = 20

// soakIncarnation is one run of one peer's process, with its first figures
// after the warm-up and its last.
type soakIncarnation struct {
	peer        string
	pid         int
	started     time.Time
	base, last  soakSample
	hasBase     bool
	goroutines  bool // the figures hold goroutine counts, not thread counts
	endedByKill bool
}

type soakSample struct {
	at         time.Time
	rss        int64 // bytes
	threads    int
	goroutines int // -1 when the status API does not give it
}

// finalSweep gets every stored key once more through one peer each, four
// at a time.
func (s *soak) finalSweep(keys *soakKeys) {
	all := keys.all()
	var mu sync.Mutex
	var failed []string
	checked := 0
	work := make(chan string)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.sweepTimeout)
	defer cancel()
	for w := range 4 {
		rng := rand.New(rand.NewPCG(s.seed, uint64(10+w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for key := range work {
				out, _, err := s.call(ctx, rng, -1, func(c *node.Client, cctx context.Context) error {
					g, err := c.KVGet(cctx, key)
					if err == nil && g.Value != soakValue(key) {
						return permanentError{fmt.Errorf("value %q, want %q", g.Value, soakValue(key))}
					}
					return err
				})
				if ctx.Err() != nil {
					continue // out of time: counted as unchecked
				}
				mu.Lock()
				checked++
				if out != soakOK {
					failed = append(failed, fmt.Sprintf("%s: %v", key, err))
					if len(failed) >= soakSweepMaxFailures {
						cancel()
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, k := range all {
		if ctx.Err() != nil {
			break
		}
		work <- k
	}
	close(work)
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kv.gets += checked - len(failed)
	s.kv.getsFailed += len(failed)
	s.kv.sweepUnchecked = len(all) - checked
	for _, f := range failed {
		s.failure("final sweep: get %s", f)
	}
	for _, f := range failed[:min(3, len(failed))] {
		key, _, _ := strings.Cut(f, ":")
		s.t.Logf("soak: where %s is, as each peer's lookup sees it:\n%s", key, s.whereIs(key))
	}
	s.t.Logf("soak: final sweep: %d of %d stored keys read back, %d failed, %d left unchecked (sweep stopped after %d failures or %v)",
		checked-len(failed), len(all), len(failed), len(all)-checked, soakSweepMaxFailures, s.cfg.sweepTimeout)
}

// whereIs asks every live peer to look key up, and lists the owner and
// replicas each one finds, by peer name: peers that disagree point at a
// ring that has not healed. s.mu is held.
func (s *soak) whereIs(key string) string {
	names := map[string]string{}
	for _, sp := range s.peers {
		names[sp.p.ID] = sp.p.Name
	}
	var lines []string
	for _, sp := range s.peers {
		if !sp.up {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		l, err := sp.client.Lookup(ctx, node.LookupRequest{Key: key})
		cancel()
		if err != nil {
			lines = append(lines, fmt.Sprintf("  %s: %v", sp.p.Name, err))
			continue
		}
		var reps []string
		for _, r := range l.Replicas {
			reps = append(reps, names[r.ID])
		}
		lines = append(lines, fmt.Sprintf("  %s: owner %s, replicas %v, %d hops", sp.p.Name, names[l.Owner.ID], reps, l.Hops))
	}
	return strings.Join(lines, "\n")
}

// newIncarnation starts the figures of peer i's current process.
func (s *soak) newIncarnation(i int) {
	p := s.peers[i].p
	inc := &soakIncarnation{peer: p.Name, pid: p.cmd.Process.Pid, started: time.Now()}
	s.incs[i] = inc
	s.allIncs = append(s.allIncs, inc)
}

// sample takes the figures of every running peer.
func (s *soak) sample() {
	for i := range s.peers {
		if inc := s.incs[i]; inc != nil && s.client(i) != nil {
			s.sampleOne(i, inc)
		}
	}
}

// sampleOne reads one process's resident memory and threads from
// /proc/PID/status and, when the status API gives it, its goroutine count.
// The first sample after both the soak and the process are warmed-up is
// its base.
func (s *soak) sampleOne(i int, inc *soakIncarnation) {
	rss, threads, err := soakProcStatus(inc.pid)
	if err != nil {
		return
	}
	sm := soakSample{at: time.Now(), rss: rss, threads: threads, goroutines: -1}
	if s.goStatus {
		if cl := s.client(i); cl != nil {
			sm.goroutines = s.statusGoroutines(cl)
		}
	}
	inc.goroutines = sm.goroutines >= 0
	inc.last = sm
	warm := time.Since(s.start) >= s.cfg.warmup && time.Since(inc.started) >= s.cfg.warmup
	if !inc.hasBase && warm && !inc.endedByKill {
		inc.base, inc.hasBase = sm, true
	}
}

// statusGoroutines reads a goroutine count from GET /v1/status, under
// the names a daemon might give it; -1 when there is none.
func (s *soak) statusGoroutines(cl *node.Client) int {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	var m map[string]any
	if err := cl.Get(ctx, "/v1/status", &m); err != nil {
		return -1
	}
	for _, k := range []string{"goroutines", "num_goroutine", "num_goroutines"} {
		if v, ok := m[k].(float64); ok {
			return int(v)
		}
	}
	return -1
}

// soakProcStatus reads VmRSS (in bytes) and Threads from /proc/PID/status.
func soakProcStatus(pid int) (rss int64, threads int, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	found := 0
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return 0, 0, err
			}
			rss = kb << 10
			found++
		case "Threads":
			if threads, err = strconv.Atoi(fields[0]); err != nil {
				return 0, 0, err
			}
			found++
		}
	}
	if found < 2 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or Threads line", pid)
	}
	return rss, threads, sc.Err()
}

// Growth allowed between a survivor's base and its end: the figures of a
// busy daemon move with its traffic, a leak grows without bound.
const (
	soakCountFactor = 1.5
	soakCountSlack  = 50
	soakRSSFactor   = 1.5
	soakRSSSlack    = 32 << 20
)

// report logs the figures line and fails the test on any failed get,
// failed or corrupt fetch, or growth.
func (s *soak) report() {
	t := s.t
	s.mu.Lock()
	kv := s.kv
	s.mu.Unlock()

	var fetches, verified int
	for _, r := range s.rounds {
		fetches += len(s.peers) - 1
		verified += len(r.took)
	}
	var maxRejoin time.Duration
	for _, d := range s.rejoins {
		maxRejoin = max(maxRejoin, d)
	}
	var resumed, reissued int
	for _, r := range s.rounds {
		resumed += r.resumed
		reissued += r.reissued
	}

	// Survivors: processes that ran from a base after the warm-up to the
	// end, a full span of soakSampleEvery apart at least.
	var survivors int
	var cStart, cEnd, rStart, rEnd int64
	var growth []string
	what := "threads"
	if s.goStatus {
		what = "goroutines"
	}
	for _, inc := range s.allIncs {
		if !inc.hasBase || inc.endedByKill || inc.last.at.Sub(inc.base.at) < soakSampleEvery {
			continue
		}
		survivors++
		b, e := int64(inc.base.threads), int64(inc.last.threads)
		if s.goStatus {
			b, e = int64(inc.base.goroutines), int64(inc.last.goroutines)
		}
		cStart, cEnd = cStart+b, cEnd+e
		rStart, rEnd = rStart+inc.base.rss, rEnd+inc.last.rss
		if float64(e) > soakCountFactor*float64(b)+soakCountSlack {
			growth = append(growth, fmt.Sprintf("%s (pid %d): %s %d → %d", inc.peer, inc.pid, what, b, e))
		}
		if float64(inc.last.rss) > soakRSSFactor*float64(inc.base.rss)+soakRSSSlack {
			growth = append(growth, fmt.Sprintf("%s (pid %d): rss %d → %d MiB", inc.peer, inc.pid, inc.base.rss>>20, inc.last.rss>>20))
		}
	}
	per := func(total int64) int64 {
		if survivors == 0 {
			return 0
		}
		return total / int64(survivors)
	}
	t.Logf("soak: failed_gets=%d gets=%d gets_to_killed=%d gets_retried_on_restarting=%d puts=%d failed_puts=%d puts_to_killed=%d min_replicas=%d under_replicated=%d keys=%d sweep_unchecked=%d fetches=%d/%d rounds=%d resumed=%d reissued=%d kills=%d rejoin_max=%.1fs not_rejoined=%d %s start→end %d→%d (mean per survivor %d→%d, %d survivors) rss start→end %d→%d MiB (mean %d→%d MiB) [%s form, seed %d, %d MiB files, %.0f s]",
		kv.getsFailed, kv.gets, kv.getsToKilled, kv.getsOnRestarting, kv.puts, kv.putsFailed, kv.putsToKilled,
		kv.minReplicas, kv.underReplicated, kv.keys, kv.sweepUnchecked, verified, fetches, len(s.rounds), resumed, reissued, s.kills, maxRejoin.Seconds(), len(s.noRejoin),
		what, cStart, cEnd, per(cStart), per(cEnd), survivors, rStart>>20, rEnd>>20, per(rStart)>>20, per(rEnd)>>20,
		s.cfg.form, s.seed, s.cfg.fileSize>>20, time.Since(s.start).Seconds())

	for _, f := range kv.failures {
		t.Errorf("kv failure: %s", f)
	}
	if n := kv.getsFailed + kv.putsFailed; n > len(kv.failures) {
		t.Errorf("and %d more kv failures", n-len(kv.failures))
	}
	for _, f := range s.fetchErrs {
		t.Errorf("fetch failure: %s", f)
	}
	for _, f := range s.noRejoin {
		t.Errorf("rejoin failure: %s", f)
	}
	if verified != fetches {
		t.Errorf("%d of %d fetches verified byte-identical", verified, fetches)
	}
	if kv.gets == 0 || kv.keys == 0 {
		t.Errorf("the kv loop stored %d keys and got %d: it did not run", kv.keys, kv.gets)
	}
	if survivors == 0 {
		t.Errorf("no peer ran from the warm-up to the end, so growth went unchecked")
	}
	for _, g := range growth {
		t.Errorf("growth beyond %.1f× + slack: %s", soakCountFactor, g)
	}
}

package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

var (
	soakLong = flag.Bool("soak.long", false,
		"run TestChurnSoak in its long form (10 minutes of churn) instead of the short one (90 s)")
	soakSeedFlag = flag.Uint64("soak.seed", 0,
		"seed of TestChurnSoak's random choices (victims, down times, keys, sharers); 0 takes one from the clock")
)

// soakConfig sizes one form of the churn soak.
type soakConfig struct {
	form      string
	peers     int
	duration  time.Duration // of churn, kv traffic and fetch rounds
	killEvery time.Duration // one kill -9 per period
	maxDown   time.Duration // a victim stays down a random time below this
	fileSize  int64         // of each fetch round's file
	warmup    time.Duration // before the first goroutine and memory figures
	// lastRound: no new fetch round starts when less than this is left.
	lastRound time.Duration
	// roundTimeout bounds one fetch round, from its share to the last
	// verified copy.
	roundTimeout time.Duration
	// sweepTimeout bounds the final read of every stored key; a sweep
	// also stops after soakSweepMaxFailures failed gets.
	sweepTimeout time.Duration
}

// soakSweepMaxFailures: a final sweep that saw this many failed gets has
// made its point and stops, since each can take a lookup timeout.
const soakSweepMaxFailures = 20

func soakConfigFor(long bool) soakConfig {
	if long {
		return soakConfig{form: "long", peers: 16, duration: 10 * time.Minute, killEvery: 20 * time.Second,
			maxDown: 8 * time.Second, fileSize: 64 << 20, warmup: 30 * time.Second,
			lastRound: 2 * time.Minute, roundTimeout: 3 * time.Minute, sweepTimeout: 2 * time.Minute}
	}
	return soakConfig{form: "short", peers: 16, duration: 90 * time.Second, killEvery: 20 * time.Second,
		maxDown: 8 * time.Second, fileSize: 64 << 20, warmup: 30 * time.Second,
		lastRound: 30 * time.Second, roundTimeout: 120 * time.Second, sweepTimeout: 45 * time.Second}
}

// Limits of the soak's own bookkeeping.
const (
	soakRPCTimeout = 20 * time.Second // one kv call (the daemon bounds its own at 15 s)
	// soakRejoinGrace: a peer restarted less than this ago may answer
	// "not joined" or miss a key while it rejoins; its calls are retried
	// until the grace ends, and count as failures only after that.
	soakRejoinGrace = 30 * time.Second
	soakKVPace      = 50 * time.Millisecond // between kv calls
	soakSampleEvery = 5 * time.Second       // goroutine and memory figures
	soakPollEvery   = time.Second           // fetch progress
	soakMaxLogged   = 10                    // failures logged in full
)

// soakPeer is the soak's view of one cluster peer. The test goroutine alone
// touches p (Kill9, Restart); the kv goroutine reads the rest under mu.
type soakPeer struct {
	p *Peer

	up        bool
	gen       int       // incremented by every kill
	restarted time.Time // when its control API last came back; zero if never killed
	client    *node.Client

	// rejoining: restarted, and not yet seen in the ring (test goroutine
	// only).
	rejoining bool
}

// soakKV counts the kv traffic, as the kv goroutine saw it.
type soakKV struct {
	puts, putsToKilled, putsRetried, putsFailed int
	gets, getsToKilled, getsRetried, getsFailed int
	// getsOnRestarting counts gets that succeeded only after retries on
	// a peer that had just been restarted.
	getsOnRestarting int
	minReplicas      int
	underReplicated  int // puts stored on fewer than 2 peers: not counted as keys
	keys             int
	sweepUnchecked   int // keys the final sweep had no time for
	failures         []string
}

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

// soakRound is one fetch round: one peer shares a new file, the others
// fetch it.
type soakRound struct {
	n       int
	sharer  int
	src     string
	sum     [sha256.Size]byte
	hash    string
	started time.Time
	// issued: leechers whose get was accepted by their current process;
	// done: leechers whose copy was verified byte-identical.
	issued, done map[int]bool
	verifying    map[int]bool // copies being hashed
	took         map[int]time.Duration
	resumed      int // restarted leechers that resumed the fetch themselves
	reissued     int // restarted leechers whose fetch had to be asked again
	// cleanup: peers that were down when the round ended, to clean up
	// after their restart.
	cleanup map[int]bool
}

type soak struct {
	t     *testing.T
	cfg   soakConfig
	c     *Cluster
	seed  uint64
	start time.Time

	mu    sync.Mutex
	peers []*soakPeer
	kv    soakKV

	// The test goroutine's own state.
	rng       *rand.Rand
	kills     int
	lastKill  string // guarded by mu
	round     *soakRound
	rounds    []*soakRound
	fetchErrs []string
	reshared  int // sharers whose swarm was not resumed after a restart
	incs      map[int]*soakIncarnation
	allIncs   []*soakIncarnation
	rejoins   []time.Duration // restart to ring membership, per restart
	noRejoin  []string        // restarted peers not in the ring within soakRejoinGrace
	srcDir    string
	goStatus  bool // the status API reports goroutines
	// work carries what background goroutines (hashing copies, writing
	// the next round's file) hand back to the test goroutine.
	work      chan func()
	preparing bool // the next round's file is being written
	closing   bool // churn is over: no new round starts
}

// Sixteen real peers under churn: every 20 s one random peer is killed
// with SIGKILL, stays down a random few seconds and is restarted from its
// home, while a kv loop puts keys and gets them from random live peers and
// every peer fetches a shared 64 MiB file. It asserts that no get of a
// stored key fails (a record lives on 8 peers and at most one is down, so
// every key always has a live replica), that every copy of every fetch
// round ends byte-identical to the original, and that the goroutines and
// memory of the peers that ran through the soak did not grow, and that
// every restarted peer is back in the ring within 30 s. The short form
// (90 s of churn, about 100 s in all) runs in `go test ./...`; the long
// one is `go test ./integration/ -run TestChurnSoak -soak.long -timeout
// 30m` (10 minutes of churn). -soak.seed replays a run's random choices
// (their timing still varies).
func TestChurnSoak(t *testing.T) {
	cfg := soakConfigFor(*soakLong)
	seed := *soakSeedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: %s form, seed %d (rerun with -soak.seed %d), %d peers, %v of churn (kill -9 every %v, down < %v), %d MiB per fetch round",
		cfg.form, seed, seed, cfg.peers, cfg.duration, cfg.killEvery, cfg.maxDown, cfg.fileSize>>20)

	c := NewCluster(t, cfg.peers)
	soakKeepLogs(t, c)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))

	s := &soak{t: t, cfg: cfg, c: c, seed: seed, rng: rand.New(rand.NewPCG(seed, 1)),
		incs: map[int]*soakIncarnation{}, srcDir: t.TempDir(), work: make(chan func(), 256)}
	s.kv.minReplicas = 1 << 30
	for i, p := range c.Peers {
		cl, err := node.NewClient(p.Home)
		if err != nil {
			t.Fatal(err)
		}
		s.peers = append(s.peers, &soakPeer{p: p, up: true, client: cl})
		s.newIncarnation(i)
	}
	s.goStatus = s.statusGoroutines(s.peers[0].client) >= 0
	if !s.goStatus {
		t.Logf("soak: GET /v1/status has no goroutine count; the figures use the Threads line of /proc/PID/status instead")
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	kvKeys := &soakKeys{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.kvLoop(ctx, rand.New(rand.NewPCG(seed, 2)), kvKeys)
	}()
	stopKV := func() { cancel(); wg.Wait() }
	defer stopKV()

	s.start = time.Now()
	s.prepareRound()
	(<-s.work)() // the first round starts before the first kill is due
	// The first kill comes early, so the first fetch round is hit too.
	killT := time.NewTimer(cfg.killEvery / 4)
	defer killT.Stop()
	pollT := time.NewTicker(soakPollEvery)
	defer pollT.Stop()
	sampleT := time.NewTicker(soakSampleEvery)
	defer sampleT.Stop()
	end := time.NewTimer(cfg.duration)
	defer end.Stop()
	var restartT <-chan time.Time
	victim := -1
churn:
	for {
		select {
		case <-killT.C:
			killT.Reset(cfg.killEvery)
			if victim >= 0 {
				continue // still down: the schedule skips a beat rather than kill two
			}
			victim = s.rng.IntN(len(s.peers))
			down := time.Duration(s.rng.Int64N(int64(cfg.maxDown)))
			s.kill(victim, down)
			restartT = time.After(down)
		case <-restartT:
			restartT = nil
			s.restart(victim)
			victim = -1
		case f := <-s.work:
			f()
		case <-pollT.C:
			s.pollRejoins()
			s.pollRound()
		case <-sampleT.C:
			s.sample()
		case <-end.C:
			break churn
		}
	}
	s.closing = true
	if victim >= 0 {
		s.restart(victim)
	}
	stopKV()
	t.Logf("soak: churn over after %.1f s: %d kills", time.Since(s.start).Seconds(), s.kills)

	// The round in flight, if any, must still finish.
	if s.round != nil {
		deadline := s.round.started.Add(cfg.roundTimeout)
		for s.round != nil && time.Now().Before(deadline) {
			select {
			case f := <-s.work:
				f()
			case <-pollT.C:
				s.pollRejoins()
				s.pollRound()
			}
		}
		if s.round != nil {
			s.stuckRound(true)
		}
	}
	// The last peer restarted must be back in the ring too.
	for s.anyRejoining() {
		<-pollT.C
		s.pollRejoins()
	}
	// Every key stored during the soak is read once more, now that the
	// ring is quiet, through random peers.
	s.finalSweep(kvKeys)
	s.sample()
	s.report()
}

func (s *soak) anyRejoining() bool {
	for _, sp := range s.peers {
		if sp.rejoining {
			return true
		}
	}
	return false
}

// soakKeepLogs copies every peer's log to $SOAK_KEEP_LOGS/<test>/ when the
// test failed and that variable is set, before the homes are removed.
func soakKeepLogs(t *testing.T, c *Cluster) {
	t.Cleanup(func() {
		dir := os.Getenv("SOAK_KEEP_LOGS")
		if dir == "" || !t.Failed() {
			return
		}
		dir = filepath.Join(dir, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Logf("keep logs: %v", err)
			return
		}
		for _, p := range c.Peers {
			if b, err := os.ReadFile(p.LogPath); err == nil {
				_ = os.WriteFile(filepath.Join(dir, p.Name+".log"), b, 0o644)
			}
		}
		t.Logf("logs kept in %s", dir)
	})
}

// soakKeys is the kv goroutine's list of stored keys.
type soakKeys struct {
	mu   sync.Mutex
	keys []string
}

func (k *soakKeys) add(key string) {
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
}

func (k *soakKeys) all() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.keys...)
}

func (k *soakKeys) pick(rng *rand.Rand) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 0 {
		return "", false
	}
	return k.keys[rng.IntN(len(k.keys))], true
}

func soakValue(key string) string { return "value of " + key }

// soakOutcome is how one kv call ended.
type soakOutcome int

const (
	soakOK       soakOutcome = iota
	soakToKilled             // the peer asked was killed meanwhile: not the system's failure
	soakFailed
)

// kvLoop puts new keys and gets stored ones through random live peers
// until ctx ends: one put for three gets.
func (s *soak) kvLoop(ctx context.Context, rng *rand.Rand, keys *soakKeys) {
	pace := time.NewTicker(soakKVPace)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		key, ok := keys.pick(rng)
		if !ok || rng.IntN(4) == 0 {
			key = fmt.Sprintf("soak-%d", n)
			var replicas int
			out, retried, err := s.call(ctx, rng, -1, func(c *node.Client, cctx context.Context) error {
				r, err := c.Put(cctx, node.PutRequest{Key: key, Value: soakValue(key), TTL: "1h"})
				replicas = r.Replicas
				return err
			})
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			switch out {
			case soakOK:
				s.kv.puts++
				if retried {
					s.kv.putsRetried++
				}
				s.kv.minReplicas = min(s.kv.minReplicas, replicas)
				if replicas >= 2 {
					s.kv.keys++
					keys.add(key)
				} else {
					s.kv.underReplicated++
				}
			case soakToKilled:
				s.kv.putsToKilled++
			case soakFailed:
				s.kv.putsFailed++
				s.failure("put %s: %v", key, err)
			}
			s.mu.Unlock()
			continue
		}
		out, retried, err := s.call(ctx, rng, -1, func(c *node.Client, cctx context.Context) error {
			g, err := c.KVGet(cctx, key)
			if err == nil && g.Value != soakValue(key) {
				return permanentError{fmt.Errorf("value %q, want %q", g.Value, soakValue(key))}
			}
			return err
		})
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		switch out {
		case soakOK:
			s.kv.gets++
			if retried {
				s.kv.getsOnRestarting++
			}
		case soakToKilled:
			s.kv.getsToKilled++
		case soakFailed:
			s.kv.getsFailed++
			s.failure("get %s: %v", key, err)
		}
		s.mu.Unlock()
	}
}

// failure records a kv failure; s.mu is held.
func (s *soak) failure(format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	if s.lastKill != "" {
		msg += " (last kill: " + s.lastKill + ")"
	}
	if len(s.kv.failures) < soakMaxLogged {
		s.kv.failures = append(s.kv.failures, msg)
	}
	s.t.Logf("soak: FAILURE %s", msg)
}

// call runs fn on a live peer (at, or a random one when at < 0). A call
// that fails because its peer was killed meanwhile is soakToKilled; one
// that fails on a peer restarted less than soakRejoinGrace ago is retried
// until the grace ends; any other failure is soakFailed. retried reports
// whether it succeeded only after retries.
func (s *soak) call(ctx context.Context, rng *rand.Rand, at int, fn func(*node.Client, context.Context) error) (out soakOutcome, retried bool, err error) {
	i, gen, cl, restarted, err := s.pickLive(rng, at)
	if err != nil {
		return soakFailed, false, err
	}
	name := s.peers[i].p.Name
	for {
		cctx, cancel := context.WithTimeout(ctx, soakRPCTimeout)
		err = fn(cl, cctx)
		cancel()
		if err == nil {
			return soakOK, retried, nil
		}
		if ctx.Err() != nil {
			return soakToKilled, retried, ctx.Err()
		}
		err = fmt.Errorf("through %s: %w", name, err)
		s.mu.Lock()
		killed := s.peers[i].gen != gen
		s.mu.Unlock()
		var pe permanentError
		switch {
		case killed:
			return soakToKilled, retried, err
		case errors.As(err, &pe):
			return soakFailed, retried, err
		case !restarted.IsZero() && time.Since(restarted) < soakRejoinGrace:
			retried = true
			select {
			case <-ctx.Done():
				return soakToKilled, retried, ctx.Err()
			case <-time.After(pollInterval): // poll interval of the retry, not a fixed wait
			}
		default:
			if retried {
				err = fmt.Errorf("%w (still failing %v after %s's restart)", err, soakRejoinGrace, name)
			}
			return soakFailed, retried, err
		}
	}
}

// pickLive returns a live peer (at, or a random one) with its kill
// generation, client and restart time.
func (s *soak) pickLive(rng *rand.Rand, at int) (int, int, *node.Client, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []int
	for i, sp := range s.peers {
		if sp.up && (at < 0 || at == i) {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		return 0, 0, nil, time.Time{}, errors.New("no live peer")
	}
	i := live[rng.IntN(len(live))]
	sp := s.peers[i]
	return i, sp.gen, sp.client, sp.restarted, nil
}

// kill marks peer i down and kills it with SIGKILL.
func (s *soak) kill(i int, down time.Duration) {
	sp := s.peers[i]
	s.mu.Lock()
	sp.up = false
	sp.gen++
	sp.client = nil
	s.mu.Unlock()
	pid := sp.p.cmd.Process.Pid
	if inc := s.incs[i]; inc != nil {
		inc.endedByKill = true
	}
	sp.p.Kill9()
	s.kills++
	s.mu.Lock()
	s.lastKill = fmt.Sprintf("%s at t=%.1fs", sp.p.Name, time.Since(s.start).Seconds())
	s.mu.Unlock()
	s.t.Logf("soak: t=%.1fs kill -9 %s (pid %d), down for %.1f s", time.Since(s.start).Seconds(), sp.p.Name, pid, down.Seconds())
}

// restart starts peer i again from its home and puts its fetch back in
// hand: resumed by the daemon, or asked again.
func (s *soak) restart(i int) {
	sp := s.peers[i]
	began := time.Now()
	sp.p.Restart()
	cl, err := node.NewClient(sp.p.Home)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	sp.up, sp.client, sp.restarted = true, cl, time.Now()
	s.mu.Unlock()
	sp.rejoining = true
	s.newIncarnation(i)
	note := ""
	if r := s.round; r != nil {
		note = s.rejoinRound(r, i, cl)
	}
	if s.cleanupAfterRestart(i, cl) {
		note += "; cleaned up an ended round"
	}
	s.t.Logf("soak: t=%.1fs restarted %s (pid %d) in %.1f s%s", time.Since(s.start).Seconds(), sp.p.Name,
		sp.p.cmd.Process.Pid, time.Since(began).Seconds(), note)
}

// pollRejoins checks that every restarted peer is back in the ring (its
// successor list full) within soakRejoinGrace, and records how long it
// took.
func (s *soak) pollRejoins() {
	for i, sp := range s.peers {
		cl := s.client(i)
		if !sp.rejoining || cl == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		r, err := cl.Ring(ctx)
		cancel()
		since := time.Since(sp.restarted)
		if err == nil && r.Joined && len(r.Successors) == min(8, len(s.peers)-1) {
			sp.rejoining = false
			s.rejoins = append(s.rejoins, since)
			continue
		}
		if since > soakRejoinGrace {
			sp.rejoining = false
			msg := fmt.Sprintf("t=%.1fs %s not back in the ring %v after its restart: joined=%v, %d successors (%v)",
				time.Since(s.start).Seconds(), sp.p.Name, soakRejoinGrace, r.Joined, len(r.Successors), err)
			s.noRejoin = append(s.noRejoin, msg)
			s.t.Logf("soak: FAILURE %s", msg)
		}
	}
}

// rejoinRound checks what a restarted peer does with the round in flight.
func (s *soak) rejoinRound(r *soakRound, i int, cl *node.Client) string {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := cl.SwarmStatus(ctx, r.hash)
	switch {
	case i == r.sharer && err == nil:
		return "; resumed seeding"
	case i == r.sharer:
		// A shared swarm is saved complete and must come back by itself.
		s.reshared++
		s.fetchErr("round %d: sharer %s did not resume seeding after its restart: %v", r.n, s.peers[i].p.Name, err)
		if _, err := cl.Share(ctx, node.ShareRequest{Path: r.src}); err != nil {
			s.t.Fatalf("round %d: share again through %s: %v", r.n, s.peers[i].p.Name, err)
		}
		return "; shared again"
	case r.done[i]:
		return ""
	case err == nil:
		r.resumed++
		r.issued[i] = true
		return fmt.Sprintf("; resumed the fetch at %d/%d pieces", st.Have, st.Pieces)
	case errors.Is(err, node.ErrNotFoundAPI) && !r.issued[i]:
		return "; fetch not asked yet" // the round started while it was down
	case errors.Is(err, node.ErrNotFoundAPI):
		// The daemon saves a swarm before it accepts the get, so a
		// restart must bring it back.
		r.reissued++
		r.issued[i] = false // pollRound asks again
		s.fetchErr("round %d: %s did not resume the fetch it had accepted before it was killed", r.n, s.peers[i].p.Name)
		return "; fetch not resumed, asking again"
	}
	return fmt.Sprintf("; swarm status: %v", err)
}

// fetchErr records a failed or corrupt fetch.
func (s *soak) fetchErr(format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.fetchErrs = append(s.fetchErrs, msg)
	s.t.Logf("soak: FETCH FAILURE %s", msg)
}

// client returns peer i's client, nil while it is down.
func (s *soak) client(i int) *node.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.peers[i].up {
		return nil
	}
	return s.peers[i].client
}

// soakPrepared is a fetch round's file, written and hashed.
type soakPrepared struct {
	n   int
	src string
	sum [sha256.Size]byte
	err error
}

// prepareRound writes the next round's file off the test goroutine, and
// has the round start once it is ready.
func (s *soak) prepareRound() {
	n := len(s.rounds)
	src := filepath.Join(s.srcDir, fmt.Sprintf("round-%d.bin", n))
	seed := s.rng.Uint64()
	s.preparing = true
	go func() {
		pr := soakPrepared{n: n, src: src}
		if _, pr.err = swarm.WriteSample(src, s.cfg.fileSize, seed); pr.err == nil {
			pr.sum, pr.err = soakSHA256(src)
		}
		s.work <- func() { s.startRound(pr) }
	}()
}

// startRound shares a prepared file from a random live peer; pollRound
// then asks every other live peer to fetch it.
func (s *soak) startRound(pr soakPrepared) {
	s.preparing = false
	if pr.err != nil {
		s.t.Fatalf("round %d: write its file: %v", pr.n, pr.err)
	}
	if s.closing {
		_ = os.Remove(pr.src)
		return
	}
	var live []int
	for i := range s.peers {
		if s.client(i) != nil {
			live = append(live, i)
		}
	}
	r := &soakRound{n: pr.n, sharer: live[s.rng.IntN(len(live))], src: pr.src, sum: pr.sum,
		issued: map[int]bool{}, done: map[int]bool{}, verifying: map[int]bool{},
		took: map[int]time.Duration{}, cleanup: map[int]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), soakRPCTimeout)
	defer cancel()
	sh, err := s.client(r.sharer).Share(ctx, node.ShareRequest{Path: r.src})
	if err != nil {
		s.t.Fatalf("round %d: share through %s: %v", r.n, s.peers[r.sharer].p.Name, err)
	}
	r.hash, r.started = sh.InfoHash, time.Now()
	s.round = r
	s.rounds = append(s.rounds, r)
	s.t.Logf("soak: t=%.1fs round %d: %s shares %d MiB as %s", time.Since(s.start).Seconds(), r.n,
		s.peers[r.sharer].p.Name, s.cfg.fileSize>>20, r.hash[:12])
	s.pollRound()
}

// outDir is where peer i puts round r's copy.
func (s *soak) outDir(r *soakRound, i int) string {
	return filepath.Join(s.peers[i].p.Home, fmt.Sprintf("soak-round-%d", r.n))
}

// pollRound asks for the gets not yet accepted, checks progress and has
// the copies that completed verified off the test goroutine.
func (s *soak) pollRound() {
	r := s.round
	if r == nil {
		return
	}
	if time.Since(r.started) > s.cfg.roundTimeout && !s.closing {
		// Given up on during the churn: reported, and the soak goes on
		// with a new round; the goroutine dumps are kept for the end.
		s.stuckRound(false)
		if time.Until(s.start.Add(s.cfg.duration)) >= s.cfg.lastRound {
			s.prepareRound()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*rpcTimeout)
	defer cancel()
	for i, sp := range s.peers {
		cl := s.client(i)
		if i == r.sharer || r.done[i] || r.verifying[i] || cl == nil {
			continue
		}
		if !r.issued[i] {
			if _, err := cl.StartGet(ctx, node.GetRequest{Ref: r.hash, Out: s.outDir(r, i)}); err != nil {
				s.fetchErr("round %d: get through %s: %v", r.n, sp.p.Name, err)
				continue
			}
			r.issued[i] = true
			continue
		}
		st, err := cl.SwarmStatus(ctx, r.hash)
		if err != nil {
			continue // a restart in between; rejoinRound sorts it out
		}
		if st.Error != "" {
			s.fetchErr("round %d: %s: swarm error: %s", r.n, sp.p.Name, st.Error)
			r.done[i] = true // failed for good; counted in fetchErrs
			s.maybeEndRound(r)
			if s.round != r {
				return
			}
			continue
		}
		if !st.Complete {
			continue
		}
		r.verifying[i] = true
		took := time.Since(r.started)
		go func() {
			sum, err := soakSHA256(st.Path)
			s.work <- func() { s.verified(r, i, st.Path, sum, err, took) }
		}()
	}
}

// verified takes the hash of peer i's copy of round r, and ends the round
// once every copy is in.
func (s *soak) verified(r *soakRound, i int, path string, sum [sha256.Size]byte, err error, took time.Duration) {
	if r != s.round {
		return // the round was given up as stuck meanwhile
	}
	name := s.peers[i].p.Name
	switch {
	case err != nil:
		s.fetchErr("round %d: %s: read its copy: %v", r.n, name, err)
	case sum != r.sum:
		s.fetchErr("round %d: %s: %s is not byte-identical to the original (sha256 %x, want %x)",
			r.n, name, path, sum[:8], r.sum[:8])
	default:
		r.took[i] = took
	}
	delete(r.verifying, i)
	r.done[i] = true
	s.maybeEndRound(r)
}

// maybeEndRound ends round r once every leecher's copy is verified or has
// failed for good, and prepares the next while there is time for one.
func (s *soak) maybeEndRound(r *soakRound) {
	if r != s.round || len(r.done) < len(s.peers)-1 {
		return
	}
	var slowest time.Duration
	for _, d := range r.took {
		slowest = max(slowest, d)
	}
	s.t.Logf("soak: t=%.1fs round %d: %d/%d copies verified, the last complete after %.1f s; %d restarted leechers resumed, %d asked again",
		time.Since(s.start).Seconds(), r.n, len(r.took), len(s.peers)-1, slowest.Seconds(), r.resumed, r.reissued)
	s.endRound(r)
	s.round = nil
	if !s.closing && time.Until(s.start.Add(s.cfg.duration)) >= s.cfg.lastRound {
		s.prepareRound()
	}
}

// endRound removes round r's swarm and copies from every peer, so that
// later figures are not inflated by swarms kept for nothing.
func (s *soak) endRound(r *soakRound) {
	for i := range s.peers {
		cl := s.client(i)
		if cl == nil {
			r.cleanup[i] = true
			continue
		}
		s.removeRound(r, i, cl)
	}
	_ = os.Remove(r.src)
}

func (s *soak) removeRound(r *soakRound, i int, cl *node.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := cl.RemoveSwarm(ctx, r.hash); err != nil && !errors.Is(err, node.ErrNotFoundAPI) {
		s.t.Logf("soak: round %d: remove the swarm from %s: %v", r.n, s.peers[i].p.Name, err)
	}
	if i != r.sharer {
		_ = os.RemoveAll(s.outDir(r, i))
	}
}

// cleanupAfterRestart removes the ended rounds a peer was down for.
func (s *soak) cleanupAfterRestart(i int, cl *node.Client) bool {
	did := false
	for _, r := range s.rounds {
		if r.cleanup[i] {
			s.removeRound(r, i, cl)
			delete(r.cleanup, i)
			did = true
		}
	}
	return did
}

// stuckRound reports a round that did not finish in time, with each
// unfinished peer's progress and, when dump is set (the churn is over),
// has those peers dump their goroutines to their logs (SIGQUIT) so the
// cause can be read there.
func (s *soak) stuckRound(dump bool) {
	r := s.round
	var lines []string
	for i, sp := range s.peers {
		if i == r.sharer || r.done[i] {
			continue
		}
		cl := s.client(i)
		line := sp.p.Name + ": down"
		if cl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			st, err := cl.SwarmStatus(ctx, r.hash)
			cancel()
			line = fmt.Sprintf("%s: %v", sp.p.Name, err)
			if err == nil {
				line = sp.p.Name + ": " + describeStatus(st)
			}
		}
		lines = append(lines, line)
	}
	for i, sp := range s.peers {
		if !dump || i == r.sharer || r.done[i] || !sp.p.running() {
			continue
		}
		sp.p.stopped = true
		_ = sp.p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-sp.p.done:
		case <-time.After(killTimeout):
		}
	}
	dumped := ""
	if dump {
		dumped = "; goroutine dumps (SIGQUIT) in the logs of the unfinished peers"
	}
	s.fetchErr("round %d stuck: %d of %d copies verified %v after the share%s:\n%s",
		r.n, len(r.done), len(s.peers)-1, s.cfg.roundTimeout, dumped, strings.Join(lines, "\n"))
	for i := range s.peers {
		if i != r.sharer && !r.done[i] {
			r.done[i] = true
		}
	}
	s.round = nil
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

func soakSHA256(path string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
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

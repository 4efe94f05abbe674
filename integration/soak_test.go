package integration

import (
	"context"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
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

// client returns peer i's client, nil while it is down.
func (s *soak) client(i int) *node.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.peers[i].up {
		return nil
	}
	return s.peers[i].client
}

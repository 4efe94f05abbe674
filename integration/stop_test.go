package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
	"github.com/peer-overlay/peer/swarm"
)

// stopLoadDeadline is how long a daemon may take to exit after SIGTERM,
// however busy it is: node.StopTimeout (8 s) bounds its stop, and the rest
// is for the process to end.
const stopLoadDeadline = 10 * time.Second

// stopLoadBadLines are what a daemon logs when its stop overran and it left
// steps running (cmd/peer/run.go and node/node.go).
var stopLoadBadLines = []string{"stopped at the deadline", "left running", "stopped with steps left running"}

// stopLoadTerm sends SIGTERM to p and checks that it exits with code 0
// within stopLoadDeadline, logging that it left the group and stopped, and
// nothing about steps left running. A daemon still running at the deadline
// is sent SIGQUIT, so its goroutines are in its log, and fails the test.
func stopLoadTerm(t *testing.T, p *Peer) time.Duration {
	t.Helper()
	if !p.running() {
		t.Fatalf("stop %s: it is not running (%v)", p.Name, p.waitErr)
	}
	var from int64
	if fi, err := os.Stat(p.LogPath); err == nil {
		from = fi.Size()
	}
	p.stopped = true
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopLoadDeadline):
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(killTimeout):
			_ = p.cmd.Process.Kill()
		}
		t.Fatalf("stop %s: still running %v after SIGTERM; sent SIGQUIT, its goroutines are in %s:\n%s",
			p.Name, stopLoadDeadline, p.LogPath, stopLoadLogSince(p.LogPath, from, 60))
	}
	took := time.Since(start)
	log := stopLoadLogSince(p.LogPath, from, 0)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("stop %s: exited with code %d (%v) %v after SIGTERM, want 0; its log since:\n%s",
			p.Name, code, p.waitErr, took.Round(time.Millisecond), log)
	}
	for _, bad := range stopLoadBadLines {
		if strings.Contains(log, bad) {
			t.Errorf("stop %s: its log says %q; since SIGTERM:\n%s", p.Name, bad, log)
		}
	}
	for _, want := range []string{"stopping: leaving the group", "msg=stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("stop %s: its log lacks %q; since SIGTERM:\n%s", p.Name, want, log)
		}
	}
	// Warnings a stop logged are not failures (a peer closing its streams
	// under load may see errors), but they are worth seeing.
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Logf("stop %s: %s", p.Name, line)
		}
	}
	return took
}

// stopLoadLogSince returns the log at path from byte offset from on, only
// its last n lines when n > 0.
func stopLoadLogSince(path string, from int64, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	if from > int64(len(b)) {
		from = 0
	}
	s := strings.TrimRight(string(b[from:]), "\n")
	if n > 0 {
		lines := strings.Split(s, "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		s = strings.Join(lines, "\n")
	}
	return s
}

// stopLoadStatus returns p's status of swarm h.
func stopLoadStatus(p *Peer, h string) (swarm.Status, error) {
	c, err := p.api()
	if err != nil {
		return swarm.Status{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := c.SwarmStatus(ctx, h)
	if err == nil && st.Error != "" {
		return st, permanentError{errorString(p.Name + ": " + st.Error)}
	}
	return st, err
}

// stopLoadMidway fails unless p's fetch of h is under way: some pieces in
// hand, not all, and at least one peer to fetch from.
func stopLoadMidway(t *testing.T, p *Peer, h string) swarm.Status {
	t.Helper()
	var st swarm.Status
	Eventually(t, 60*time.Second, pollInterval, func() error {
		var err error
		if st, err = stopLoadStatus(p, h); err != nil {
			return err
		}
		if st.Complete {
			return permanentError{fmt.Errorf("%s finished before it could be stopped mid-transfer", p.Name)}
		}
		if st.Have == 0 || st.Peers == 0 {
			return fmt.Errorf("%s: %s", p.Name, describeStatus(st))
		}
		return nil
	})
	return st
}

// Eight peers; one seeds 64 MiB and seven fetch it at 4 MiB/s each, so the
// transfer lasts at least 16 s. While it runs, three daemons get SIGTERM,
// one after the other: a leecher holding many connections (libp2p ones to
// every member, swarm streams, and kept ping streams each with its own
// control API request open), another leecher half-way, and the seeder.
// Each must exit 0 within 10 s, having left the group and logged no step
// left running. Then the three start again from their homes, and every
// copy ends byte-identical: a stop under load keeps what was saved sound.
func TestStopUnderLoad(t *testing.T) {
	const size = 64 << 20
	c := NewCluster(t, 8)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	src := filepath.Join(t.TempDir(), "load.bin")
	sum, err := swarm.WriteSample(src, size, 99)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// peer-0 is every peer's bootstrap, kept running so the stopped peers
	// can come back; peer-1 seeds.
	seeder, busy, half := c.Peers[1], c.Peers[3], c.Peers[5]
	seedAPI, err := seeder.api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := seedAPI.Share(ctx, node.ShareRequest{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	var leechers []*Peer
	for _, p := range c.Peers {
		if p == seeder {
			continue
		}
		leechers = append(leechers, p)
		cl, err := p.api()
		if err != nil {
			t.Fatal(err)
		}
		req := node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(p.Home, "downloads"), DownloadRate: 4 << 20}
		if _, err := cl.StartGet(ctx, req); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}

	// 1. A leecher with many connections open: kept ping streams from it
	// to every other peer and from every other peer to it, each one a
	// control API request streaming its answer, besides the swarm's.
	stopLoadMidway(t, busy, sh.InfoHash)
	sessCtx, endSessions := context.WithCancel(ctx)
	defer endSessions()
	var sessions sync.WaitGroup
	var mu sync.Mutex
	started := map[string]bool{}
	sessionErrs := map[string]error{}
	session := func(from, to *Peer) {
		cl, err := from.api()
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.Decode(to.ID)
		if err != nil {
			t.Fatal(err)
		}
		name := from.Name + "→" + to.Name
		sessions.Add(1)
		go func() {
			defer sessions.Done()
			err := cl.PingSession(sessCtx, node.PingSessionRequest{Peer: id, Count: 1000, Interval: 100 * time.Millisecond, Timeout: time.Second},
				func(overlay.PingEvent) {
					mu.Lock()
					started[name] = true
					mu.Unlock()
				})
			mu.Lock()
			sessionErrs[name] = err
			mu.Unlock()
		}()
	}
	nsessions := 0
	for _, p := range c.Peers {
		if p != busy {
			session(busy, p)
			session(p, busy)
			nsessions += 2
		}
	}
	Eventually(t, 30*time.Second, pollInterval, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(started) < nsessions {
			return fmt.Errorf("%d of %d ping sessions under way", len(started), nsessions)
		}
		return nil
	})
	conns, err := busy.Connections()
	if err != nil {
		t.Fatal(err)
	}
	if conns < len(c.Peers)-1 {
		t.Fatalf("%s has %d connections open, want at least one to each of the %d others", busy.Name, conns, len(c.Peers)-1)
	}
	st, err := stopLoadStatus(busy, sh.InfoHash)
	if err != nil {
		t.Fatal(err)
	}
	took := stopLoadTerm(t, busy)
	t.Logf("%s: exited %.2f s after SIGTERM with %d connections, %d ping sessions and its fetch at %d/%d pieces from %d peers",
		busy.Name, took.Seconds(), conns, nsessions, st.Have, st.Pieces, st.Peers)
	// The sessions through the stopped daemon's control API end with it;
	// those of the others towards it carry on pinging a peer that is gone.
	Eventually(t, 10*time.Second, pollInterval, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range c.Peers {
			name := busy.Name + "→" + p.Name
			if _, ended := sessionErrs[name]; p != busy && !ended {
				return fmt.Errorf("ping session %s still open after its daemon exited", name)
			}
		}
		return nil
	})

	// 2. A leecher half-way through.
	st = stopLoadMidway(t, half, sh.InfoHash)
	took = stopLoadTerm(t, half)
	t.Logf("%s: exited %.2f s after SIGTERM with its fetch at %d/%d pieces from %d peers", half.Name, took.Seconds(), st.Have, st.Pieces, st.Peers)

	// 3. The seeder, while leechers still fetch from it.
	var behind *Peer
	for _, p := range leechers {
		if p == busy || p == half {
			continue
		}
		if lst, err := stopLoadStatus(p, sh.InfoHash); err == nil && !lst.Complete {
			behind = p
			break
		}
	}
	if behind == nil {
		t.Fatal("every running leecher finished before the seeder could be stopped under load")
	}
	sst, err := stopLoadStatus(seeder, sh.InfoHash)
	if err != nil {
		t.Fatal(err)
	}
	took = stopLoadTerm(t, seeder)
	t.Logf("%s (seeder): exited %.2f s after SIGTERM, having uploaded %d MiB to %d peers, %s still fetching",
		seeder.Name, took.Seconds(), sst.Uploaded>>20, sst.Peers, behind.Name)
	endSessions()
	sessions.Wait()

	// Back from their homes, every copy completes byte-identical; the
	// half-way leecher resumes instead of starting over.
	for _, p := range []*Peer{busy, half, seeder} {
		p.Restart()
	}
	for _, p := range leechers {
		st := swarmDone(t, p, sh.InfoHash, 120*time.Second)
		got, err := swarm.FileSHA1(st.Path)
		if err != nil || got != sum {
			t.Fatalf("%s: %s differs from the original (%v)", p.Name, st.Path, err)
		}
		if p == half && st.Downloaded >= size {
			t.Errorf("%s downloaded the whole file again after its stop and restart", p.Name)
		}
	}
}

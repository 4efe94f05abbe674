package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/distribute"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// The orders a target took survive a restart: what saveLocked writes, load
// reads back, field for field; a file that does not parse is set aside
// without stopping the peer.
func TestSavedOrdersRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), ordersFile)
	newD := func() *distributor {
		return &distributor{log: slog.New(slog.DiscardHandler), path: path, orders: map[meta.InfoHash]*savedOrder{}}
	}
	d := newD()
	h1, h2 := meta.InfoHash{1}, meta.InfoHash{2}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	d.orders[h1] = &savedOrder{InfoHash: h1.String(), From: "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF",
		Job: "1-abcd", Name: "data.bin", Size: 6 << 20, Out: "/h/distributed", Ordered: at, State: distribute.StateFetching}
	d.orders[h2] = &savedOrder{InfoHash: h2.String(), From: "x", Job: "2-ef01", Name: "b", Size: 1, Out: "/o",
		Ordered: at, State: distribute.StateFailed, Reason: "no peer provided it"}
	if err := d.saveLocked(); err != nil {
		t.Fatal(err)
	}
	got := newD()
	if err := got.load(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.orders, d.orders) {
		t.Fatalf("loaded %+v, saved %+v", got.orders, d.orders)
	}
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := newD()
	if err := bad.load(); err != nil || len(bad.orders) != 0 {
		t.Fatalf("a corrupt file: err %v, %d orders", err, len(bad.orders))
	}
	none := &distributor{log: slog.New(slog.DiscardHandler), path: filepath.Join(t.TempDir(), ordersFile), orders: map[meta.InfoHash]*savedOrder{}}
	if err := none.load(); err != nil {
		t.Fatalf("no file: %v", err)
	}
}

// An order for more than the disk has free is refused with a reason, and
// leaves nothing behind: no swarm, no saved order.
func TestOrderRefusedWithoutSpace(t *testing.T) {
	n := startTestNode(t, filepath.Join(t.TempDir(), "a"))
	saved := swarm.DiskFree
	swarm.DiskFree = func(string) (int64, error) { return 1 << 20, nil }
	t.Cleanup(func() { swarm.DiskFree = saved })
	var h [20]byte
	h[0] = 7
	rep := n.dist.order(n.ID(), &distribute.Order{Hash: h, Job: "j1", Name: "big.iso", Size: 1 << 30})
	if rep.State != distribute.StateRefused || !strings.Contains(rep.Reason, "not enough disk space") {
		t.Fatalf("reply %+v: want refused for disk space", rep)
	}
	if n.swarms.Swarm(meta.InfoHash(h)) != nil {
		t.Fatal("a swarm was started for a refused order")
	}
	n.dist.mu.Lock()
	kept := n.dist.orders[meta.InfoHash(h)]
	n.dist.mu.Unlock()
	if kept != nil {
		t.Fatal("the refused order was saved")
	}
}

const (
	testPeerA = "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"
	testPeerB = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
)

// testPeers are the peer IDs the tests' targets have.
func testPeers(t *testing.T) (a, b peer.ID) {
	t.Helper()
	var err error
	if a, err = peer.Decode(testPeerA); err == nil {
		b, err = peer.Decode(testPeerB)
	}
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func newJobsDistributor(path string, log *slog.Logger) *distributor {
	return &distributor{log: log, jobsPath: path, jobs: map[string]*distJob{}}
}

// The origin's jobs survive its restart: what saveJobs writes, loadJobs
// reads back, field for field; a finished job shows as it did, and new
// IDs go on from the highest one saved.
func TestSavedJobsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), jobsFile)
	d := newJobsDistributor(path, slog.New(slog.DiscardHandler))
	start := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC).Local()
	a, b := testPeers(t)
	done := &distJob{d: d, id: "7-0a0b0c0d", hash: meta.InfoHash{1}, name: "data.bin", size: 6 << 20, pieces: 48,
		pieceLen: 128 << 10, path: "/src/data.bin", wait: time.Minute, start: start,
		ended: start.Add(9 * time.Second), sent: 7 << 20, targets: []*distTarget{
			{id: a, as: "alpha", state: TargetDone, ordered: true, have: 48, pieces: 48, bytes: 6 << 20,
				took: 4*time.Second + 5, deaths: 1, deadSince: start.Add(time.Second), sentAt: start.Add(time.Millisecond), final: true},
			{id: b, state: TargetRefused, reason: "not an operator", took: time.Second, final: true},
		}}
	running := &distJob{d: d, id: "9-deadbeef", hash: meta.InfoHash{2}, name: "dir", size: 1 << 30, pieces: 1024,
		pieceLen: 1 << 20, path: "/src/dir", wait: 10 * time.Minute, start: start.Add(time.Hour),
		sentEarlier: 3 << 20, targets: []*distTarget{
			{id: a, state: TargetFetching, ordered: true, have: 10, pieces: 1024, bytes: 10 << 20, rate: 1 << 20,
				sentAt: start.Add(time.Hour + time.Second)},
			{id: b, state: TargetDead, reason: "does not answer", deaths: 2, deadSince: start.Add(time.Hour + time.Minute)},
		}}
	d.addJobLocked(done)
	d.addJobLocked(running)
	if err := d.saveJobs(); err != nil {
		t.Fatal(err)
	}
	got := newJobsDistributor(path, slog.New(slog.DiscardHandler))
	got.loadJobs()
	jobs := got.listJobs()
	if len(jobs) != 2 || jobs[0].id != done.id || jobs[1].id != running.id {
		t.Fatalf("loaded %d jobs, want %s then %s", len(jobs), done.id, running.id)
	}
	for i, want := range []*distJob{done, running} {
		if g, w := jobs[i].saved(), want.saved(); !reflect.DeepEqual(g, w) {
			t.Errorf("job %s loaded as\n%+v\nsaved\n%+v", want.id, g, w)
		}
	}
	if g, w := jobs[0].view(), done.view(); !reflect.DeepEqual(g, w) {
		t.Errorf("the finished job shows as\n%+v\nnot as before\n%+v", g, w)
	}
	if v := jobs[0].view(); !v.Done || v.Report.OK || v.Report.Done != 1 || v.Report.OriginSent != 7<<20 || v.Targets[0].Seconds != (4*time.Second+5).Seconds() {
		t.Errorf("the finished job: %+v", v)
	}
	// The running job keeps its start, so its targets' times still count
	// from it, and what the origin sent before.
	v := jobs[1].view()
	if v.Done || !v.Started.Equal(running.start) || v.Targets[0].Seconds < time.Since(running.start).Seconds()-1 ||
		v.Report.OriginSent != 3<<20 || v.Targets[1].Deaths != 2 || v.Targets[1].DeadSeconds <= 0 {
		t.Errorf("the running job: %+v", v)
	}
	if got.jobSeq != 9 {
		t.Errorf("jobSeq %d after loading job 9", got.jobSeq)
	}

	// At most maxJobs are kept, the newest.
	var many savedJobs
	many.Version = jobsFileVersion
	for i := range maxJobs + 3 {
		sj := done.saved()
		sj.ID = fmt.Sprintf("%d-0a0b0c0d", i+1)
		many.Jobs = append(many.Jobs, sj)
	}
	raw, err := json.Marshal(many)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	trimmed := newJobsDistributor(path, slog.New(slog.DiscardHandler))
	trimmed.loadJobs()
	if l := trimmed.listJobs(); len(l) != maxJobs || l[0].id != many.Jobs[3].ID || trimmed.jobSeq != maxJobs+3 {
		t.Errorf("loaded %d of %d jobs (first %s, seq %d), want the newest %d", len(l), len(many.Jobs), l[0].id, trimmed.jobSeq, maxJobs)
	}
}

// A jobs file that does not parse, or that holds a job it cannot use, is
// moved aside with a warning naming it, and the distributor starts with
// no jobs; the orders file beside it is left alone.
func TestSavedJobsCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, jobsFile)
	orders := filepath.Join(dir, ordersFile)
	const ordersText = `[{"infohash":"x"}]`
	if err := os.WriteFile(orders, []byte(ordersText), 0o600); err != nil {
		t.Fatal(err)
	}
	d := newJobsDistributor(path, slog.New(slog.DiscardHandler))
	a, _ := testPeers(t)
	d.addJobLocked(&distJob{d: d, id: "1-00000000", hash: meta.InfoHash{1}, path: "/f", wait: time.Minute,
		start: time.Now(), targets: []*distTarget{{id: a, state: TargetOrdering}}})
	if err := d.saveJobs(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, text string }{
		{"not JSON", `{"version":1,"jobs":[{"id":`},
		{"a bad peer ID", strings.Replace(string(good), testPeerA, "not-a-peer", 1)},
		{"another version", strings.Replace(string(good), `"version": 1`, `"version": 99`, 1)},
	} {
		if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		var log testwait.LogBuffer
		bad := newJobsDistributor(path, slog.New(slog.NewTextHandler(&log, nil)))
		bad.loadJobs()
		if n := len(bad.listJobs()); n != 0 {
			t.Errorf("%s: %d jobs loaded, want none", c.name, n)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s: the bad file is still in place (%v)", c.name, err)
		}
		if b, err := os.ReadFile(path + ".bad"); err != nil || string(b) != c.text {
			t.Errorf("%s: the bad file was not moved aside as it was (%v)", c.name, err)
		}
		if l := log.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, path) {
			t.Errorf("%s: no warning naming %s: %q", c.name, path, l)
		}
		if b, err := os.ReadFile(orders); err != nil || string(b) != ordersText {
			t.Errorf("%s: the orders file changed: %q (%v)", c.name, b, err)
		}
	}
	// A file of the right version with its jobs intact loads.
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := newJobsDistributor(path, slog.New(slog.DiscardHandler))
	ok.loadJobs()
	if n := len(ok.listJobs()); n != 1 {
		t.Fatalf("the good file: %d jobs", n)
	}
}

// writeJobsFile saves jobs in home's jobs file, as a previous run would.
func writeJobsFile(t *testing.T, home string, jobs ...savedJob) {
	t.Helper()
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(savedJobs{Version: jobsFileVersion, Jobs: jobs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, jobsFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A restarted origin whose jobs file is corrupt starts all the same, with
// no jobs, the file moved aside.
func TestStartWithCorruptJobsFile(t *testing.T) {
	home := filepath.Join(t.TempDir(), "o")
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, jobsFile), []byte("\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, log := startKeyedNode(t, home, "")
	if jobs := n.dist.listJobs(); len(jobs) != 0 {
		t.Fatalf("%d jobs from a corrupt file", len(jobs))
	}
	if _, err := os.Stat(filepath.Join(home, jobsFile+".bad")); err != nil {
		t.Fatalf("the corrupt file was not moved aside: %v", err)
	}
	if !strings.Contains(log.String(), jobsFile) {
		t.Fatalf("no warning names the file: %s", log)
	}
}

// A restarted origin resumes the jobs it ran: a finished one shows as it
// was; a running one whose file is gone fails its open targets, naming the
// path; a running one whose file is there is shared again (once, though
// the swarm manager restores it too on the next start), its targets
// followed from where they were.
func TestResumeSavedJobs(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "o")
	src := filepath.Join(dir, "data.bin")
	if _, err := swarm.WriteSample(src, 300<<10, 3); err != nil {
		t.Fatal(err)
	}
	info, err := meta.Build(src, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Minute)
	target := func(state string, final bool) savedTarget {
		st := savedTarget{Peer: testPeerA, State: state, Final: final, Ordered: state != TargetOrdering}
		if final {
			st.TookNanos = int64(20 * time.Second)
		}
		return st
	}
	finished := savedJob{ID: "1-aaaaaaaa", InfoHash: meta.InfoHash{9}.String(), Name: "old", Path: filepath.Join(dir, "old"),
		Size: 10, Pieces: 1, PieceLength: 16 << 10, WaitNanos: int64(time.Minute), Started: start.UnixNano(),
		Ended: start.Add(30 * time.Second).UnixNano(), Sent: 10, Targets: []savedTarget{target(TargetDone, true)}}
	gone := filepath.Join(dir, "gone.bin")
	lost := savedJob{ID: "2-bbbbbbbb", InfoHash: meta.InfoHash{8}.String(), Name: "gone.bin", Path: gone,
		Size: 10, Pieces: 1, PieceLength: 16 << 10, WaitNanos: int64(time.Minute), Started: start.UnixNano(),
		Targets: []savedTarget{target(TargetDone, true), target(TargetFetching, false)}}
	live := savedJob{ID: "3-cccccccc", InfoHash: info.Hash().String(), Name: info.Name, Path: src,
		Size: info.TotalLength(), Pieces: info.NumPieces(), PieceLength: info.PieceLength, WaitNanos: int64(time.Minute),
		Started: start.UnixNano(), Sent: 5, Targets: []savedTarget{target(TargetFetching, false)}}
	writeJobsFile(t, home, finished, lost, live)

	n, log := startKeyedNode(t, home, "")
	jobs := n.dist.listJobs()
	if len(jobs) != 3 {
		t.Fatalf("%d jobs loaded, want 3", len(jobs))
	}
	if v := jobs[0].view(); !v.Done || !v.Report.OK || v.Seconds != 30 || v.Targets[0].Seconds != 20 {
		t.Errorf("the finished job: %+v", v)
	}
	testwait.Until(t, 10*time.Second, func() error {
		if !jobs[1].view().Done {
			return errors.New("the job whose file is gone has not ended")
		}
		return nil
	})
	v := jobs[1].view()
	if !v.Done || v.Report.OK || v.Report.Done != 1 || len(v.Report.Failures) != 1 ||
		v.Targets[1].State != TargetFailed || !strings.Contains(v.Targets[1].Reason, gone) {
		t.Errorf("the job whose file is gone: %+v", v)
	}
	if v.Targets[0].Seconds != 20 || v.Targets[1].Seconds < 60 {
		t.Errorf("times not from the job's start: %+v", v.Targets)
	}
	waitResumed(t, log)
	if s := n.swarms.Swarm(info.Hash()); s == nil || !s.Status().Complete {
		t.Fatalf("the live job's file is not shared again; log:\n%s", log)
	}
	if v := jobs[2].view(); v.Done || v.Targets[0].State != TargetFetching || v.Targets[0].Seconds < 60 || v.Report.OriginSent != 5 {
		t.Errorf("the resumed job: %+v", v)
	}
	n.Close(0)

	// What the stop saved: the lost job ended, the live one still running.
	saved, err := readJobs(nil, filepath.Join(home, jobsFile))
	if err != nil || len(saved) != 3 || saved[1].ended.IsZero() || !saved[2].ended.IsZero() {
		t.Fatalf("saved at the stop: %v, %d jobs", err, len(saved))
	}
	// Started again, the swarm manager restores the live job's swarm from
	// its own state; the job takes that one rather than adding another.
	n2, log2 := startKeyedNode(t, home, "")
	waitResumed(t, log2)
	if l := log2.String(); strings.Contains(l, "cannot resume") {
		t.Fatalf("the second start did not resume the live job:\n%s", l)
	}
	if got := n2.dist.listJobs(); len(got) != 3 || got[2].view().Done {
		t.Fatalf("after the second start: %d jobs", len(got))
	}
	if l := log2.String(); !strings.Contains(l, "resumed swarms") || len(n2.swarms.Swarms()) != 1 {
		t.Fatalf("the swarm manager did not restore the one swarm (%d swarms):\n%s", len(n2.swarms.Swarms()), l)
	}
}

// waitResumed waits for log to say a job was resumed.
func waitResumed(t *testing.T, log *testwait.LogBuffer) {
	t.Helper()
	testwait.Until(t, 10*time.Second, func() error {
		if !strings.Contains(log.String(), "resuming a distribution job") {
			return fmt.Errorf("no job resumed yet; log:\n%s", log)
		}
		return nil
	})
}

func TestCheckOriginCopies(t *testing.T) {
	for _, c := range []float64{0, 1, 1.2, 1000} {
		if err := CheckOriginCopies(c); err != nil {
			t.Errorf("%g copies refused: %v", c, err)
		}
	}
	for _, c := range []float64{-1, 0.5, 0.99, 1001, math.NaN(), math.Inf(1)} {
		if err := CheckOriginCopies(c); err == nil {
			t.Errorf("%g copies taken", c)
		}
	}
}

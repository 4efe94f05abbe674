package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// distCluster starts n peers where peer-0 is the origin: every peer i
// for which operator(i) holds lists peer-0 in its config's operators;
// extra(i), when not nil, gives more `peer run` flags.
func distCluster(t *testing.T, n int, operator func(i int) bool, extra func(i int) []string) *Cluster {
	t.Helper()
	var origin string
	return newCluster(t, n, func(i int, p *Peer) {
		if _, err := node.InitHome(p.Home); err != nil {
			t.Fatal(err)
		}
		if extra != nil {
			p.extra = extra(i)
		}
		if i == 0 {
			id, err := node.PeerIDOf(p.Home)
			if err != nil {
				t.Fatal(err)
			}
			origin = id.String()
			return
		}
		if !operator(i) {
			return
		}
		path := filepath.Join(p.Home, node.ConfigFile)
		cfg, err := node.LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Operators = []string{origin}
		if err := os.WriteFile(path, cfg.Marshal(), 0o600); err != nil {
			t.Fatal(err)
		}
	})
}

// distRun is a `peer distribute` running in the background.
type distRun struct {
	cmd      *exec.Cmd
	out, err bytes.Buffer
	done     chan struct{}
	cancel   context.CancelFunc
}

// startDistribute runs `peer --home ORIGIN distribute args... --json`,
// killed after limit.
func startDistribute(t *testing.T, origin *Peer, limit time.Duration, args ...string) *distRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	r := &distRun{done: make(chan struct{}), cancel: cancel}
	r.cmd = exec.CommandContext(ctx, peerBin, append([]string{"--home", origin.Home, "distribute", "--json"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.err
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// wait waits for the command to exit and returns its exit code and the
// job it printed.
func (r *distRun) wait(t *testing.T) (int, node.DistributeJob) {
	t.Helper()
	<-r.done
	r.cancel()
	code := r.cmd.ProcessState.ExitCode()
	var job node.DistributeJob
	if err := json.Unmarshal(r.out.Bytes(), &job); err != nil {
		t.Fatalf("peer distribute exited %d; its output is not one JSON job (%v):\n%s\nstderr:\n%s", code, err, r.out.String(), r.err.String())
	}
	return code, job
}

// wait2 waits for the command to exit and returns its exit code and its
// standard error, for runs that print no job.
func (r *distRun) wait2() (int, string) {
	<-r.done
	r.cancel()
	return r.cmd.ProcessState.ExitCode(), r.err.String()
}

// originJob is the origin's only distribution job (or the newest).
func originJob(origin *Peer) (node.DistributeJob, error) {
	c, err := origin.api()
	if err != nil {
		return node.DistributeJob{}, err
	}
	// Longer than rpcTimeout: with 32 daemons moving data on 2 cores, a
	// control API can take seconds to answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	jobs, err := c.DistributeJobs(ctx)
	if err != nil {
		return node.DistributeJob{}, err
	}
	if len(jobs) == 0 {
		return node.DistributeJob{}, errors.New("no job yet")
	}
	return jobs[len(jobs)-1], nil
}

func targetOf(job node.DistributeJob, id string) (node.DistributeTarget, bool) {
	for _, t := range job.Targets {
		if t.Peer == id {
			return t, true
		}
	}
	return node.DistributeTarget{}, false
}

// One origin and four targets that list it as their operator, and a fifth
// peer that does not. The file reaches the four, each with a verified
// copy, while one of them is killed with SIGKILL half-way (shown dead) and
// restarted (it finishes from the order it saved); the fifth refuses an
// order and fetches nothing. Then the origin itself is restarted while a
// small job runs, and resumes it.
func TestDistribute(t *testing.T) {
	t.Parallel()
	const size = 6 << 20
	slowIdx := 4
	c := distCluster(t, 6, func(i int) bool { return i <= 4 }, func(i int) []string {
		if i == slowIdx {
			return []string{"--download-rate", "1MiB/s"} // so that it can be killed half-way
		}
		return nil
	})
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	origin, slow, stranger := c.Peers[0], c.Peers[slowIdx], c.Peers[5]
	src := filepath.Join(t.TempDir(), "data.bin")
	sum, err := swarm.WriteSample(src, size, 17)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{src, "--wait", "60s"}
	for _, p := range c.Peers[1:5] {
		args = append(args, "--to", p.ID)
	}
	run := startDistribute(t, origin, 120*time.Second, args...)

	// Kill the slow target once it has a quarter of the pieces.
	Eventually(t, 60*time.Second, pollInterval, func() error {
		job, err := originJob(origin)
		if err != nil {
			return err
		}
		tg, ok := targetOf(job, slow.ID)
		if !ok {
			return permanentError{fmt.Errorf("the job has no target %s", slow.Name)}
		}
		if tg.State == node.TargetDone {
			return permanentError{errors.New("the slow target finished before it could be killed")}
		}
		if tg.Pieces == 0 || tg.Have < tg.Pieces/4 {
			return fmt.Errorf("%s: %s, %d/%d pieces", slow.Name, tg.State, tg.Have, tg.Pieces)
		}
		return nil
	})
	slow.Kill9()
	Eventually(t, 30*time.Second, pollInterval, func() error {
		job, err := originJob(origin)
		if err != nil {
			return err
		}
		if tg, _ := targetOf(job, slow.ID); tg.State != node.TargetDead {
			return fmt.Errorf("the origin shows the killed %s as %q, want dead", slow.Name, tg.State)
		}
		return nil
	})
	slow.Restart()

	code, job := run.wait(t)
	if code != 0 {
		t.Fatalf("peer distribute exited %d, want 0; report %+v\nstderr:\n%s", code, job.Report, run.err.String())
	}
	if !job.Done || !job.Report.OK || job.Report.Done != 4 || len(job.Targets) != 4 {
		t.Fatalf("report: %+v", job.Report)
	}
	for _, p := range c.Peers[1:5] {
		tg, ok := targetOf(job, p.ID)
		if !ok || tg.State != node.TargetDone || tg.Percent != 100 {
			t.Errorf("%s: %+v, want done at 100%%", p.Name, tg)
		}
		got, err := swarm.FileSHA1(filepath.Join(p.Home, "distributed", "data.bin"))
		if err != nil || got != sum {
			t.Errorf("%s: the copy differs from the original (%v)", p.Name, err)
		}
		// The order's file is rewritten when the target's watch sees the
		// fetch end, which may come a moment after it answered "done".
		Eventually(t, 15*time.Second, pollInterval, func() error {
			b, err := os.ReadFile(filepath.Join(p.Home, "distribute.json"))
			if err != nil || !strings.Contains(string(b), origin.ID) || !strings.Contains(string(b), `"done"`) {
				return fmt.Errorf("%s: the saved order does not name the origin as done (%v): %s", p.Name, err, b)
			}
			return nil
		})
	}
	if tg, _ := targetOf(job, slow.ID); tg.Deaths < 1 {
		t.Errorf("the killed target is reported with %d deaths", tg.Deaths)
	}
	if log, err := os.ReadFile(slow.LogPath); err != nil || !bytes.Contains(log, []byte("resuming an ordered fetch")) {
		t.Errorf("the restarted target did not resume the order it saved (%v)", err)
	}
	r := job.Report
	if r.Max < r.P99 || r.P99 < r.P50 || r.P50 <= 0 {
		t.Errorf("times out of order: %+v", r.Times)
	}
	if r.OriginSent < size/4 {
		t.Errorf("the origin sent %d bytes of a %d-byte file", r.OriginSent, size)
	}
	t.Logf("4 targets: p50 %.1f s, p99 %.1f s, max %.1f s; origin sent %.2f× the file", r.P50, r.P99, r.Max, r.EgressRatio)
	firstJob := job.ID

	// The stranger does not list the origin as an operator: it refuses.
	run = startDistribute(t, origin, 60*time.Second, src, "--to", stranger.ID, "--wait", "30s")
	code, job = run.wait(t)
	if code != 1 {
		t.Fatalf("a refused distribution exited %d, want 1", code)
	}
	tg, _ := targetOf(job, stranger.ID)
	if tg.State != node.TargetRefused || !strings.Contains(tg.Reason, "operator") || job.Report.OK {
		t.Fatalf("the stranger: %+v, report %+v; want refused for not being an operator", tg, job.Report)
	}
	if len(job.Report.Failures) != 1 || job.Report.Failures[0].Reason == "" {
		t.Errorf("failures: %+v", job.Report.Failures)
	}

	// A job that has ended is found again by ID, or as the newest, with
	// its report and its exit code.
	refusedJob := job.ID
	code, job = startDistribute(t, origin, 30*time.Second, "--attach", firstJob).wait(t)
	if code != 0 || job.ID != firstJob || !job.Report.OK || job.Report.Done != 4 {
		t.Fatalf("--attach %s: exit %d, job %s, report %+v; want the first job, all 4 done", firstJob, code, job.ID, job.Report)
	}
	code, job = startDistribute(t, origin, 30*time.Second, "--attach", "last").wait(t)
	if code != 1 || job.ID != refusedJob {
		t.Fatalf("--attach last: exit %d, job %s; want the refused job %s and exit 1", code, job.ID, refusedJob)
	}
	lr := startDistribute(t, origin, 30*time.Second, "--list")
	<-lr.done
	var jobs []node.DistributeJob
	if err := json.Unmarshal(lr.out.Bytes(), &jobs); err != nil || len(jobs) != 2 || jobs[0].ID != firstJob || jobs[1].ID != refusedJob {
		t.Fatalf("--list: %v, %+v; want the two jobs, oldest first", err, jobs)
	}
	if code, _ := startDistribute(t, origin, 30*time.Second, "--attach", "no-such-job").wait2(); code != 1 {
		t.Fatalf("--attach of an unknown job exited %d, want 1", code)
	}
	sc, err := stranger.api()
	if err != nil {
		t.Fatal(err)
	}
	list, err := sc.Swarms(context.Background())
	if err != nil || len(list) != 0 {
		t.Errorf("the stranger runs %d swarms (%v), want none", len(list), err)
	}
	if log, err := os.ReadFile(stranger.LogPath); err != nil || !bytes.Contains(log, []byte("refused a distribution request")) {
		t.Errorf("the stranger did not log the refusal (%v)", err)
	}

	restartOriginMidJob(t, c, firstJob, refusedJob)
}

// restartOriginMidJob stops the origin while a small job to a fast and
// the slow target runs, and starts it again with the same home (and a
// bootstrap peer, as peer-0 had none): it keeps its jobs, resumes the
// running one, and --attach last follows that to the end, exit 0.
func restartOriginMidJob(t *testing.T, c *Cluster, earlier ...string) {
	began := time.Now()
	origin, fast, slow := c.Peers[0], c.Peers[1], c.Peers[4]
	const size = 4 << 20 // 4 s at the slow target's 1 MiB/s
	src := filepath.Join(t.TempDir(), "small.bin")
	sum, err := swarm.WriteSample(src, size, 29)
	if err != nil {
		t.Fatal(err)
	}
	run := startDistribute(t, origin, 60*time.Second, src, "--wait", "60s", "--to", fast.ID, "--to", slow.ID)
	var before node.DistributeJob
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		job, err := originJob(origin)
		if err != nil {
			return err
		}
		if job.Name != "small.bin" {
			return errors.New("the job has not started yet")
		}
		tg, _ := targetOf(job, slow.ID)
		if tg.State == node.TargetDone {
			return permanentError{errors.New("the slow target finished before the origin could be restarted")}
		}
		if tg.State != node.TargetFetching || tg.Have >= tg.Pieces/2 {
			return fmt.Errorf("%s: %s, %d/%d pieces", slow.Name, tg.State, tg.Have, tg.Pieces)
		}
		before = job
		return nil
	})
	run.cancel() // it would fail with the daemon gone; the job goes on there
	<-run.done
	origin.boot = fast.Addr
	origin.Stop()
	origin.Restart()

	code, job := startDistribute(t, origin, 60*time.Second, "--attach", "last").wait(t)
	if code != 0 || job.ID != before.ID || !job.Report.OK || job.Report.Done != 2 || !job.Started.Equal(before.Started) {
		t.Fatalf("--attach last after the restart: exit %d, job %s started %v, report %+v; want job %s started %v, both targets done",
			code, job.ID, job.Started, job.Report, before.ID, before.Started)
	}
	for _, p := range []*Peer{fast, slow} {
		tg, _ := targetOf(job, p.ID)
		if tg.State != node.TargetDone || tg.Seconds <= 0 || tg.Seconds > job.Seconds {
			t.Errorf("%s: %+v, want done within the job's %.1f s", p.Name, tg, job.Seconds)
		}
		if was, _ := targetOf(before, p.ID); was.Final && was.Seconds != tg.Seconds {
			t.Errorf("%s was done in %.3f s before the restart, %.3f s after", p.Name, was.Seconds, tg.Seconds)
		}
		if got, err := swarm.FileSHA1(filepath.Join(p.Home, "distributed", "small.bin")); err != nil || got != sum {
			t.Errorf("%s: the copy differs from the original (%v)", p.Name, err)
		}
	}
	if log, err := os.ReadFile(origin.LogPath); err != nil || !bytes.Contains(log, []byte("resuming a distribution job")) {
		t.Errorf("the restarted origin did not log resuming the job (%v)", err)
	}
	lr := startDistribute(t, origin, 30*time.Second, "--list")
	<-lr.done
	var jobs []node.DistributeJob
	if err := json.Unmarshal(lr.out.Bytes(), &jobs); err != nil || len(jobs) != len(earlier)+1 {
		t.Fatalf("--list after the restart: %v, %d jobs; want %d", err, len(jobs), len(earlier)+1)
	}
	for i, id := range earlier {
		if jobs[i].ID != id || !jobs[i].Done {
			t.Errorf("--list after the restart: job %d is %s (done %v), want %s, done", i, jobs[i].ID, jobs[i].Done, id)
		}
	}
	if code, job := startDistribute(t, origin, 30*time.Second, "--attach", earlier[0]).wait(t); code != 0 || !job.Report.OK {
		t.Errorf("--attach %s after the restart: exit %d, report %+v; want 0, all done", earlier[0], code, job.Report)
	}
	t.Logf("the origin restarted mid-job: the job ended %.1f s after its start; this part took %.1f s",
		job.Seconds, time.Since(began).Seconds())
}

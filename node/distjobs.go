package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// The origin's jobs survive its restart: they are saved in the home when
// one starts, when a target's state changes and when one ends (at most
// once per jobsSaveEvery, and once more as the daemon stops), and read back
// when it starts. A finished job comes back as it was; a running one is
// resumed: its file is shared again and its targets followed anew, their
// times still counted from the job's start.

const (
	// jobsFile holds the jobs this peer ran as an origin.
	jobsFile = "distribute-jobs.json"
	// jobsFileVersion is the layout of jobsFile.
	jobsFileVersion = 1
	// jobsSaveEvery bounds how often jobsFile is written.
	jobsSaveEvery = time.Second
)

// savedJobs is jobsFile.
type savedJobs struct {
	Version int        `json:"version"`
	Jobs    []savedJob `json:"jobs"`
}

// savedJob is a job as the origin keeps it. Times are unix nanoseconds
// (0 for none), so that a restarted origin measures from the same start.
type savedJob struct {
	ID          string        `json:"id"`
	InfoHash    string        `json:"infohash"`
	Name        string        `json:"name"`
	Path        string        `json:"path"`
	Size        int64         `json:"size"`
	Pieces      int           `json:"pieces"`
	PieceLength int64         `json:"piece_length"`
	WaitNanos   int64         `json:"wait_ns"`
	Started     int64         `json:"started_unix_ns"`
	Ended       int64         `json:"ended_unix_ns,omitempty"`
	Sent        int64         `json:"origin_sent_bytes"` // up to the save
	Targets     []savedTarget `json:"targets"`
}

// savedTarget is one target of a savedJob.
type savedTarget struct {
	Peer      string `json:"peer"`
	As        string `json:"as,omitempty"`
	State     string `json:"state"`
	Ordered   bool   `json:"ordered,omitempty"`
	Have      int    `json:"have"`
	Pieces    int    `json:"pieces"`
	Bytes     int64  `json:"bytes"`
	Reason    string `json:"reason,omitempty"`
	TookNanos int64  `json:"took_ns,omitempty"`
	Deaths    int    `json:"deaths,omitempty"`
	DeadSince int64  `json:"dead_since_unix_ns,omitempty"`
	SentAt    int64  `json:"sent_at_unix_ns,omitempty"`
	Final     bool   `json:"final,omitempty"`
}

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// saved is j as jobsFile keeps it.
func (j *distJob) saved() savedJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	sj := savedJob{ID: j.id, InfoHash: j.hash.String(), Name: j.name, Path: j.path, Size: j.size,
		Pieces: j.pieces, PieceLength: j.pieceLen, WaitNanos: int64(j.wait), Started: unixNanos(j.start),
		Ended: unixNanos(j.ended), Sent: j.sentLocked(), Targets: make([]savedTarget, 0, len(j.targets))}
	for _, t := range j.targets {
		sj.Targets = append(sj.Targets, savedTarget{Peer: t.id.String(), As: t.as, State: t.state,
			Ordered: t.ordered, Have: t.have, Pieces: t.pieces, Bytes: t.bytes, Reason: t.reason,
			TookNanos: int64(t.took), Deaths: t.deaths, DeadSince: unixNanos(t.deadSince),
			SentAt: unixNanos(t.sentAt), Final: t.final})
	}
	return sj
}

// knownTargetStates are the states a saved target may be in.
var knownTargetStates = map[string]bool{TargetOrdering: true, TargetFetching: true, TargetDone: true,
	TargetFailed: true, TargetDead: true, TargetRefused: true}

// job is the job sj describes, or why it describes none.
func (sj savedJob) job(d *distributor) (*distJob, error) {
	h, err := meta.ParseInfoHash(sj.InfoHash)
	if err != nil {
		return nil, fmt.Errorf("infohash: %w", err)
	}
	if sj.ID == "" || sj.Started <= 0 || sj.WaitNanos <= 0 || sj.Path == "" {
		return nil, errors.New("no ID, start, wait or path")
	}
	j := &distJob{d: d, id: sj.ID, hash: h, name: sj.Name, size: sj.Size, pieces: sj.Pieces,
		pieceLen: sj.PieceLength, path: sj.Path, wait: time.Duration(sj.WaitNanos),
		start: fromUnixNanos(sj.Started), ended: fromUnixNanos(sj.Ended), sentEarlier: sj.Sent}
	if !j.ended.IsZero() {
		j.sent = sj.Sent
	}
	for _, st := range sj.Targets {
		id, err := peer.Decode(st.Peer)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", st.Peer, err)
		}
		if !knownTargetStates[st.State] {
			return nil, fmt.Errorf("target %s: unknown state %q", st.Peer, st.State)
		}
		j.targets = append(j.targets, &distTarget{id: id, as: st.As, state: st.State, ordered: st.Ordered,
			have: st.Have, pieces: st.Pieces, bytes: st.Bytes, reason: st.Reason, took: time.Duration(st.TookNanos),
			deaths: st.Deaths, deadSince: fromUnixNanos(st.DeadSince), sentAt: fromUnixNanos(st.SentAt), final: st.Final})
	}
	return j, nil
}

// readJobs reads the jobs saved at path: none when there is no file.
func readJobs(d *distributor, path string) ([]*distJob, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f savedJobs
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Version != jobsFileVersion {
		return nil, fmt.Errorf("version %d, want %d", f.Version, jobsFileVersion)
	}
	seen := map[string]bool{}
	out := make([]*distJob, 0, len(f.Jobs))
	for i, sj := range f.Jobs {
		j, err := sj.job(d)
		if err == nil && seen[sj.ID] {
			err = errors.New("a second job of that ID")
		}
		if err != nil {
			return nil, fmt.Errorf("job %d (%q): %w", i, sj.ID, err)
		}
		seen[sj.ID] = true
		out = append(out, j)
	}
	return out, nil
}

// loadJobs lists the jobs saved in the home, oldest first. A file that
// cannot be read is moved aside (jobsFile.bad) with a warning, and the
// peer starts without jobs: they are a record, not a reason to refuse to
// start.
func (d *distributor) loadJobs() {
	jobs, err := readJobs(d, d.jobsPath)
	if err != nil {
		bad := d.jobsPath + ".bad"
		if merr := os.Rename(d.jobsPath, bad); merr != nil {
			d.log.Warn("the saved distribution jobs cannot be read, nor moved aside; starting without them",
				"file", d.jobsPath, "err", err, "move_err", merr)
		} else {
			d.log.Warn("the saved distribution jobs cannot be read; moved aside, starting without them",
				"file", d.jobsPath, "moved_to", bad, "err", err)
		}
		return
	}
	if len(jobs) > maxJobs {
		jobs = jobs[len(jobs)-maxJobs:]
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, j := range jobs {
		d.addJobLocked(j)
		// New IDs go on from the highest sequence number saved.
		if seq, err := strconv.Atoi(strings.SplitN(j.id, "-", 2)[0]); err == nil && seq > d.jobSeq {
			d.jobSeq = seq
		}
	}
}

// saveJobs writes every job kept to the home, atomically.
func (d *distributor) saveJobs() error {
	d.jobsSave.Lock()
	defer d.jobsSave.Unlock()
	f := savedJobs{Version: jobsFileVersion, Jobs: []savedJob{}}
	for _, j := range d.listJobs() {
		f.Jobs = append(f.Jobs, j.saved())
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = atomicfile.Write(d.jobsPath, b, 0o600)
	}
	if err != nil {
		err = fmt.Errorf("saving the distribution jobs: %w", err)
	}
	return err
}

// jobsChanged asks saveJobsLoop to save the jobs.
func (d *distributor) jobsChanged() {
	select {
	case d.jobsKick <- struct{}{}:
	default: // a save is asked for already
	}
}

// saveJobsLoop saves the jobs when they change, at most once per
// jobsSaveEvery; a failure is logged once until it changes.
func (d *distributor) saveJobsLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.jobsKick:
		}
		err := d.saveJobs()
		if msg := fmt.Sprint(err); err != nil && msg != d.jobsErr {
			d.log.Warn("the distribution jobs were not saved", "file", d.jobsPath, "err", err)
			d.jobsErr = msg
		} else if err == nil {
			d.jobsErr = ""
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(jobsSaveEvery):
		}
	}
}

// resumeJobs takes up again the jobs a previous run left running.
func (d *distributor) resumeJobs() {
	for _, j := range d.listJobs() {
		j.mu.Lock()
		ended := !j.ended.IsZero()
		j.mu.Unlock()
		if ended {
			continue
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.resumeJob(j)
		}()
	}
}

// resumeJob shares j's file again and follows its targets that were not
// final; without the file, they fail, and the job ends.
func (d *distributor) resumeJob(j *distJob) {
	s, err := d.reshare(j)
	if d.ctx.Err() != nil {
		return
	}
	if err != nil {
		d.log.Warn("a distribution job cannot resume", "job", j.id, "err", err)
		reason := "the origin restarted, and " + err.Error()
		j.mu.Lock()
		for _, t := range j.targets {
			if !t.final {
				t.state, t.final, t.reason, t.took = TargetFailed, true, reason, time.Since(j.start)
			}
		}
		j.mu.Unlock()
		j.end()
		return
	}
	j.mu.Lock()
	j.s, j.baseUp = s, s.Status().Uploaded
	open := 0
	for _, t := range j.targets {
		if !t.final {
			open++
		}
	}
	j.mu.Unlock()
	j.resumed = time.Now()
	d.log.Info("resuming a distribution job", "job", j.id, "swarm", j.hash, "name", j.name, "targets_left", open)
	d.run(j)
}

// reshare is the swarm that serves j's file: the one the swarm manager
// restored from its own state when the peer started, or else the file
// shared again, provided it is still what the job distributes.
func (d *distributor) reshare(j *distJob) (*swarm.Swarm, error) {
	if s := d.n.swarms.Swarm(j.hash); s != nil {
		if st := s.Status(); s.Err() != nil || !st.Complete {
			return nil, fmt.Errorf("the swarm %s here holds no complete copy of %s to share", j.hash, j.path)
		}
		return s, nil
	}
	if _, err := os.Stat(j.path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is gone", j.path)
	} else if err != nil {
		return nil, fmt.Errorf("%s cannot be shared again: %w", j.path, err)
	}
	info, err := meta.Build(j.path, j.pieceLen, nil)
	if err != nil {
		return nil, fmt.Errorf("%s cannot be shared again: %w", j.path, err)
	}
	if info.Hash() != j.hash {
		return nil, fmt.Errorf("%s changed since the job started (it is %s now, not %s)", j.path, info.Hash(), j.hash)
	}
	s, err := d.n.swarms.Seed(info, j.path, swarm.ShareOptions{PieceLength: j.pieceLen})
	if err != nil {
		return nil, fmt.Errorf("%s cannot be shared again: %w", j.path, err)
	}
	return s, nil
}

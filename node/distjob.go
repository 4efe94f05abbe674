package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/distribute"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// Distribution, the origin's side: a job shares a file, orders each target
// to fetch it, and follows every target until it holds a verified copy,
// fails, or stays dead longer than the job's wait.

const (
	// pollEvery is how often the origin asks each target how far it is.
	pollEvery = 500 * time.Millisecond
	// askTimeout bounds one request to a target.
	askTimeout = 3 * time.Second
	// deadAfter: unanswered requests in a row after which a target that
	// membership still has alive is shown dead (one slow answer on a busy
	// machine is not a death).
	deadAfter = 3
	// DefaultDistributeWait is how long a dead target is waited for.
	DefaultDistributeWait = 10 * time.Minute
	// maxJobs: the jobs kept for GET /v1/distribute, newest last.
	maxJobs = 64
	// resumeGrace: for this long after a restarted origin resumes a job, a
	// target that membership does not list alive yet is waited for, not
	// counted dead (the origin may not have rejoined the group).
	resumeGrace = 30 * time.Second
	// DefaultOriginCopies bounds what the origin uploads, in copies of
	// the file (swarm.ShareOptions.EgressCopies): every piece once, and a
	// little more, and the targets trade the rest. 64 MiB to 31 peers in
	// one process (4 MiB/s origin, 2 MiB/s peers): 1.17 copies at 1.053
	// of the lower bound, against 1.91 copies at 1.025 without a bound.
	// A small crowd pays more for it, as the origin is a larger share of
	// its capacity: 8 MiB to 8 targets, 1.14 copies at 1.16 of the bound
	// against 1.65 at 1.06.
	DefaultOriginCopies = 1.2
	// stuckLiftAfter: a target that gets no new piece for this long while
	// it fetches, answering all along, lifts the bound. The swarm offers
	// again what left with a closed connection, so this is the last
	// resort (a piece at no peer but the origin, which the origin cannot
	// see); at 10 s, 32 daemons on 2 cores lifted it when only slow.
	stuckLiftAfter = 30 * time.Second
)

// Per-target states of a job.
const (
	TargetOrdering = "ordering"
	TargetFetching = "fetching"
	TargetDone     = "done"
	TargetFailed   = "failed"
	TargetDead     = "dead"
	TargetRefused  = "refused"
)

// DistributeTarget is one target of a job as GET /v1/distribute/{id} shows it.
type DistributeTarget struct {
	Peer       string  `json:"peer"`
	As         string  `json:"as,omitempty"` // the name it was given by, if any
	State      string  `json:"state"`
	Percent    float64 `json:"percent"`
	Have       int     `json:"have"`
	Pieces     int     `json:"pieces"`
	Bytes      int64   `json:"bytes"`
	Rate       float64 `json:"rate"`
	ETASeconds float64 `json:"eta_seconds,omitempty"`
	Reason     string  `json:"reason,omitempty"`
	// Seconds is the time from the job's start to the target's verified
	// copy (or its end, or now while it runs).
	Seconds float64 `json:"seconds"`
	// Deaths counts the times it stopped answering; DeadSeconds is how
	// long it has been dead now.
	Deaths      int     `json:"deaths,omitempty"`
	DeadSeconds float64 `json:"dead_seconds,omitempty"`
	Final       bool    `json:"final"`
}

// DistributeFailure is a target without a verified copy, and why.
type DistributeFailure struct {
	Peer   string `json:"peer"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

// DistributeReport sums a job up.
type DistributeReport struct {
	Targets int `json:"targets"`
	Done    int `json:"done"`
	distribute.Times
	// OriginSent is what the origin's swarm uploaded during the job, and
	// EgressRatio that over the file's size.
	OriginSent  int64               `json:"origin_sent_bytes"`
	EgressRatio float64             `json:"origin_egress_ratio"`
	Failures    []DistributeFailure `json:"failures,omitempty"`
	// OK: the job is over and every target holds a verified copy.
	OK bool `json:"ok"`
}

// DistributeJob is a job as the control API shows it.
type DistributeJob struct {
	ID          string             `json:"id"`
	InfoHash    string             `json:"infohash"`
	Name        string             `json:"name"`
	Path        string             `json:"path"`
	Size        int64              `json:"size_bytes"`
	Pieces      int                `json:"pieces"`
	Started     time.Time          `json:"started"`
	Seconds     float64            `json:"seconds"`
	WaitSeconds float64            `json:"wait_seconds"`
	Done        bool               `json:"done"`
	Targets     []DistributeTarget `json:"targets"`
	Report      DistributeReport   `json:"report"`
}

// distJob is a running or finished job. What describes the file is kept
// apart from the swarm, so that a job read back from the home after a
// restart shows as it was, whether or not the file can be shared again.
type distJob struct {
	d        *distributor
	id       string
	hash     meta.InfoHash
	name     string
	size     int64
	pieces   int
	pieceLen int64
	path     string
	wait     time.Duration
	start    time.Time
	// resumed is when a restarted origin took the job up again (zero for
	// a job this run started).
	resumed time.Time

	mu          sync.Mutex
	s           *swarm.Swarm // nil while a resumed job has not shared its file again
	baseUp      int64        // what the origin's swarm had uploaded before the job (or its resumption)
	sentEarlier int64        // what the origin uploaded for the job before it restarted
	targets     []*distTarget
	ended       time.Time
	sent        int64 // origin upload at the end
}

type distTarget struct {
	id        peer.ID
	as        string
	state     string
	ordered   bool
	have      int
	pieces    int
	bytes     int64
	rate      float64
	reason    string
	took      time.Duration
	deaths    int
	deadSince time.Time
	final     bool
	sentAt    time.Time // when the order it took was sent
	fails     int       // requests in a row that went unanswered
	// movedAt is when its count of pieces last grew (or it was ordered).
	movedAt time.Time
}

// targetRef is a target as resolved from what the caller named.
type targetRef struct {
	id peer.ID
	as string
}

// resolveTargets reads --to and --count: "all" is every alive member but
// this peer; others are peer IDs or names. count > 0 picks that many at
// random.
func (n *Node) resolveTargets(ctx context.Context, to []string, count int) ([]targetRef, error) {
	if len(to) == 0 {
		to = []string{"all"}
	}
	self := n.host.ID()
	seen := map[peer.ID]bool{}
	var out []targetRef
	for _, t := range to {
		if t == "all" {
			for _, m := range n.members.Members() {
				if m.ID != self && n.members.IsAlive(m.ID) && !seen[m.ID] {
					seen[m.ID] = true
					out = append(out, targetRef{id: m.ID})
				}
			}
			continue
		}
		id, err := n.peerOrName(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", t, err)
		}
		if id == self {
			return nil, fmt.Errorf("target %q is this peer, the origin", t)
		}
		if !seen[id] {
			seen[id] = true
			ref := targetRef{id: id}
			if id.String() != t {
				ref.as = t
			}
			out = append(out, ref)
		}
	}
	if count < 0 {
		return nil, fmt.Errorf("--count %d: want a positive number", count)
	}
	if count > 0 {
		if count > len(out) {
			return nil, fmt.Errorf("--count %d: only %d targets to pick from", count, len(out))
		}
		mrand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		out = out[:count]
	}
	if len(out) == 0 {
		return nil, errors.New("no targets: no other member of the group is alive")
	}
	return out, nil
}

// startJob runs a job distributing s to targets.
func (d *distributor) startJob(s *swarm.Swarm, path string, targets []targetRef, wait time.Duration, baseUp int64) *distJob {
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	info := s.Info()
	j := &distJob{d: d, hash: s.Hash(), name: info.Name, size: info.TotalLength(), pieces: info.NumPieces(),
		pieceLen: info.PieceLength, path: path, wait: wait, start: time.Now(), s: s, baseUp: baseUp}
	for _, t := range targets {
		j.targets = append(j.targets, &distTarget{id: t.id, as: t.as, state: TargetOrdering})
	}
	d.mu.Lock()
	d.jobSeq++
	j.id = fmt.Sprintf("%d-%s", d.jobSeq, hex.EncodeToString(rb[:]))
	d.addJobLocked(j)
	d.mu.Unlock()
	d.jobsChanged()
	d.log.Info("distribution started", "job", j.id, "swarm", j.hash, "name", j.name, "targets", len(targets))
	d.run(j)
	return j
}

// addJobLocked lists j as the newest job, dropping the oldest beyond
// maxJobs.
func (d *distributor) addJobLocked(j *distJob) {
	d.jobs[j.id] = j
	d.jobOrder = append(d.jobOrder, j.id)
	if len(d.jobOrder) > maxJobs {
		delete(d.jobs, d.jobOrder[0])
		d.jobOrder = d.jobOrder[1:]
	}
}

// run follows every target of j that is not final yet, and ends the job
// once all are. A job cut short by the daemon's stop is not ended: it is
// saved as it stands and resumed by the next run.
func (d *distributor) run(j *distJob) {
	j.mu.Lock()
	var open []*distTarget
	for _, t := range j.targets {
		if !t.final {
			open = append(open, t)
		}
	}
	j.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range open {
		wg.Add(1)
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer wg.Done()
			j.follow(t)
		}()
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		wg.Wait()
		if d.ctx.Err() == nil {
			j.end()
		}
	}()
}

// end records the end of the job.
func (j *distJob) end() {
	j.mu.Lock()
	j.sent = j.sentLocked()
	j.ended = time.Now()
	j.mu.Unlock()
	j.d.jobsChanged()
	v := j.view()
	j.d.log.Info("distribution ended", "job", j.id, "done", v.Report.Done, "targets", v.Report.Targets,
		"p50_s", v.Report.P50, "max_s", v.Report.Max, "origin_sent", v.Report.OriginSent)
}

// sentLocked is what the origin uploaded for the job so far, across its
// restarts.
func (j *distJob) sentLocked() int64 {
	switch {
	case !j.ended.IsZero():
		return j.sent
	case j.s == nil:
		return j.sentEarlier
	}
	return j.sentEarlier + j.s.Status().Uploaded - j.baseUp
}

// follow orders one target and polls it to its end.
func (j *distJob) follow(t *distTarget) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		j.step(t)
		j.mu.Lock()
		final := t.final
		j.mu.Unlock()
		if final {
			return
		}
		select {
		case <-j.d.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// step is one exchange with a target.
func (j *distJob) step(t *distTarget) {
	j.mu.Lock()
	ordered := t.ordered
	j.mu.Unlock()
	n := j.d.n
	if !n.members.IsAlive(t.id) {
		if !j.resumed.IsZero() && time.Since(j.resumed) < resumeGrace {
			return // a restarted origin may not know the group yet
		}
		j.dead(t, "not alive in the group's membership", true)
		return
	}
	h := [20]byte(j.hash)
	req := distribute.Request{Status: &distribute.StatusRequest{Hash: h}}
	if !ordered {
		req = distribute.Request{Order: &distribute.Order{Hash: h, Job: j.id, Name: j.name,
			Size: j.size, Hints: j.hints(t)}}
	}
	sent := time.Now()
	rep, err := j.d.ask(j.d.ctx, t.id, req)
	if err != nil {
		if j.d.ctx.Err() == nil {
			j.dead(t, "does not answer: "+err.Error(), false)
		}
		return
	}
	j.mu.Lock()
	defer j.unlockNoting(t, t.mark())
	// Back from the dead, a target's count has not grown because it was
	// down, not because no peer has what it lacks.
	if rep.Have > t.have || t.movedAt.IsZero() || !t.deadSince.IsZero() || t.fails > 0 {
		t.movedAt = time.Now()
	}
	t.deadSince, t.fails = time.Time{}, 0
	t.have, t.pieces, t.bytes, t.rate = rep.Have, rep.Pieces, rep.Bytes, rep.Rate
	t.reason = rep.Reason
	if !ordered && rep.State != distribute.StateUnknown {
		t.sentAt = sent
	}
	// A finished target's time is its own count from the order to its
	// last verified piece, not when this poll happened to see it.
	took := time.Since(j.start)
	if !t.sentAt.IsZero() && rep.Seconds > 0 {
		took = min(took, t.sentAt.Sub(j.start)+time.Duration(rep.Seconds*float64(time.Second)))
	}
	switch rep.State {
	case distribute.StateUnknown:
		// It lost the order (a home wiped, say): order it again.
		t.ordered, t.state = false, TargetOrdering
	case distribute.StateFetching:
		t.ordered, t.state = true, TargetFetching
		if time.Since(t.movedAt) > stuckLiftAfter && j.s != nil && j.s.LiftEgressBudget() {
			j.d.log.Info("a target has had no new piece for a while: the origin now serves without its egress bound",
				"job", j.id, "target", t.id, "have", t.have, "pieces", t.pieces, "for", time.Since(t.movedAt).Round(time.Second).String())
		}
	case distribute.StateDone:
		t.state, t.final, t.took = TargetDone, true, took
		t.have = t.pieces
	case distribute.StateRefused:
		t.state, t.final, t.took = TargetRefused, true, time.Since(j.start)
	case distribute.StateFailed:
		t.state, t.final, t.took = TargetFailed, true, time.Since(j.start)
	}
}

// targetMark is what of a target is worth saving at once when it changes;
// its progress alone is not.
type targetMark struct {
	state, reason string
	final         bool
	deaths        int
}

func (t *distTarget) mark() targetMark {
	return targetMark{state: t.state, reason: t.reason, final: t.final, deaths: t.deaths}
}

// unlockNoting releases j.mu, asking for the jobs to be saved if t's mark
// is no longer before.
func (j *distJob) unlockNoting(t *distTarget, before targetMark) {
	changed := t.mark() != before
	j.mu.Unlock()
	if changed {
		j.d.jobsChanged()
	}
}

// hints are the peers a target is told to try: the job's other targets
// (at most distribute.MaxHints, from a random place in the list).
func (j *distJob) hints(t *distTarget) []peer.ID {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []peer.ID
	k := len(j.targets)
	start := mrand.IntN(max(1, k))
	for i := range k {
		o := j.targets[(start+i)%k]
		if o != t && len(out) < distribute.MaxHints {
			out = append(out, o.id)
		}
	}
	return out
}

// dead notes a target that does not answer, or that membership has dead
// (sure); it is shown dead when sure or after deadAfter misses in a row,
// and given up once dead longer than the job's wait.
func (j *distJob) dead(t *distTarget, why string, sure bool) {
	j.mu.Lock()
	defer j.unlockNoting(t, t.mark())
	now := time.Now()
	t.fails++
	if !sure && t.fails < deadAfter && t.deadSince.IsZero() {
		return
	}
	if t.deadSince.IsZero() {
		t.deadSince = now
		t.deaths++
	}
	t.state, t.reason = TargetDead, why
	if now.Sub(t.deadSince) > j.wait {
		t.final, t.took = true, now.Sub(j.start)
		t.reason = fmt.Sprintf("dead for more than %v: %s", j.wait, why)
	}
}

// view is the job as the control API shows it.
func (j *distJob) view() DistributeJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := time.Now()
	v := DistributeJob{ID: j.id, InfoHash: j.hash.String(), Name: j.name, Path: j.path,
		Size: j.size, Pieces: j.pieces, Started: j.start.UTC(),
		WaitSeconds: j.wait.Seconds(), Done: !j.ended.IsZero()}
	end := now
	if v.Done {
		end = j.ended
	}
	v.Seconds = end.Sub(j.start).Seconds()
	var times []float64
	for _, t := range j.targets {
		vt := DistributeTarget{Peer: t.id.String(), As: t.as, State: t.state, Have: t.have, Pieces: t.pieces,
			Bytes: t.bytes, Rate: t.rate, Reason: t.reason, Deaths: t.deaths, Final: t.final}
		if vt.Pieces == 0 {
			vt.Pieces = v.Pieces
		}
		vt.Percent = 100 * float64(vt.Have) / float64(max(1, vt.Pieces))
		vt.Percent = math.Round(vt.Percent*10) / 10
		if t.final {
			vt.Seconds = t.took.Seconds()
		} else {
			vt.Seconds = now.Sub(j.start).Seconds()
			vt.ETASeconds = distribute.ETA(vt.Have, vt.Pieces, v.Size, vt.Rate)
			vt.Rate = t.rate
		}
		if t.final {
			vt.Rate = 0
		}
		if !t.deadSince.IsZero() {
			// How long it has been dead, or had been when it was given up.
			until := now
			if t.final {
				until = j.start.Add(t.took)
			}
			vt.DeadSeconds = until.Sub(t.deadSince).Seconds()
		}
		v.Targets = append(v.Targets, vt)
		if t.state == TargetDone {
			times = append(times, vt.Seconds)
		} else if t.final {
			v.Report.Failures = append(v.Report.Failures, DistributeFailure{Peer: vt.Peer, State: t.state, Reason: t.reason})
		}
	}
	r := &v.Report
	r.Targets, r.Done = len(j.targets), len(times)
	r.Times = distribute.Summarize(times)
	r.OriginSent = j.sentLocked()
	if v.Size > 0 {
		r.EgressRatio = float64(r.OriginSent) / float64(v.Size)
	}
	r.OK = v.Done && r.Done == r.Targets
	return v
}

// job returns a job by ID.
func (d *distributor) job(id string) *distJob {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.jobs[id]
}

// listJobs returns every job kept, oldest first.
func (d *distributor) listJobs() []*distJob {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*distJob, 0, len(d.jobOrder))
	for _, id := range d.jobOrder {
		out = append(out, d.jobs[id])
	}
	return slices.Clip(out)
}

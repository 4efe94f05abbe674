package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/peer-overlay/peer/distribute"
	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/overlay"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// Distribution, the target's side: an operator's order to fetch a swarm
// (see package distribute for the wire format and the policy). The order
// is saved in the home beside the download's own state, so that a peer
// restarted half-way finishes the fetch and can still say who ordered it.

const (
	// ordersFile holds the orders this peer took, by infohash.
	ordersFile = "distribute.json"
	// distributedDir is where ordered downloads go unless distribute_dir
	// says otherwise.
	distributedDir = "distributed"
	// findManifest bounds how long an ordered fetch may go without the
	// manifest (no provider, or none that answers) before it fails.
	findManifest = 60 * time.Second
	// watchEvery is how often an ordered fetch is looked at.
	watchEvery = 500 * time.Millisecond
	// distributeServe bounds one request on the target.
	distributeServe = 10 * time.Second
	// Refusals are logged at most this often (a burst of refusalBurst).
	refusalEvery = 10 * time.Second
	refusalBurst = 3
)

// savedOrder is an order as the target keeps it.
type savedOrder struct {
	InfoHash string    `json:"infohash"`
	From     string    `json:"from"` // the operator that ordered it
	Job      string    `json:"job"`
	Name     string    `json:"name"`
	Size     int64     `json:"size"`
	Out      string    `json:"out"`
	Ordered  time.Time `json:"ordered"`
	State    string    `json:"state"` // fetching, done or failed
	Reason   string    `json:"reason,omitempty"`
}

// distributor is both sides of distribution on one peer: the orders it
// took as a target and the jobs it runs as an origin.
type distributor struct {
	n      *Node
	log    *slog.Logger
	policy distribute.Policy
	path   string
	out    string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu         sync.Mutex
	orders     map[meta.InfoHash]*savedOrder
	watching   map[meta.InfoHash]bool
	refusals   *rate.Limiter
	suppressed int
	jobs       map[string]*distJob
	jobOrder   []string
	jobSeq     int

	// The jobs are saved in jobsPath by saveJobsLoop when jobsKick says
	// they changed.
	jobsPath string
	jobsKick chan struct{}
	jobsSave sync.Mutex // one write of jobsPath at a time
	jobsErr  string     // the last write's error, logged once
}

func (n *Node) startDistribute() error {
	ops, err := n.cfg.operatorIDs()
	if err != nil {
		return err
	}
	out := n.cfg.DistributeDir
	if out == "" {
		out = filepath.Join(n.home, distributedDir)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &distributor{n: n, log: n.log.With("layer", "distribute"), policy: distribute.Policy{Operators: ops},
		path: filepath.Join(n.home, ordersFile), out: out, ctx: ctx, cancel: cancel,
		orders: map[meta.InfoHash]*savedOrder{}, watching: map[meta.InfoHash]bool{},
		refusals: rate.NewLimiter(rate.Every(refusalEvery), refusalBurst), jobs: map[string]*distJob{},
		jobsPath: filepath.Join(n.home, jobsFile), jobsKick: make(chan struct{}, 1)}
	if err := d.load(); err != nil {
		cancel()
		return err
	}
	d.loadJobs()
	n.dist = d
	n.host.SetStreamHandler(distribute.Protocol, d.handle)
	n.closers.Push("distribution", func() error {
		n.host.RemoveStreamHandler(distribute.Protocol)
		cancel()
		d.wg.Wait()
		// The jobs as they stand, running ones included, for the next run.
		return d.saveJobs()
	})
	d.resume()
	d.wg.Add(1)
	go d.saveJobsLoop()
	d.resumeJobs()
	return nil
}

// load reads the orders saved in the home.
func (d *distributor) load() error {
	b, err := os.ReadFile(d.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var list []savedOrder
	if err := json.Unmarshal(b, &list); err != nil {
		// A file this peer wrote atomically does not go bad by itself;
		// say so and go on without it rather than refuse to start.
		d.log.Warn("the saved orders do not parse; starting without them", "file", d.path, "err", err)
		return nil
	}
	for i := range list {
		h, err := meta.ParseInfoHash(list[i].InfoHash)
		if err != nil {
			continue
		}
		d.orders[h] = &list[i]
	}
	return nil
}

// saveLocked writes every order to the home, atomically.
func (d *distributor) saveLocked() error {
	list := make([]savedOrder, 0, len(d.orders))
	for _, o := range d.orders {
		list = append(list, *o)
	}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(d.path, b, 0o600)
}

// resume carries on with the orders a previous run did not finish: the
// swarm manager resumed their downloads already; any it could not are
// started again.
func (d *distributor) resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for h, o := range d.orders {
		if o.State != distribute.StateFetching {
			continue
		}
		if d.n.swarms.Swarm(h) == nil {
			s, restarted, err := d.n.swarms.Restart(h, o.Out)
			if !restarted {
				s, err = d.n.swarms.Get(h, o.Out, swarm.GetOptions{Name: o.Name})
			}
			if err != nil {
				o.State, o.Reason = distribute.StateFailed, getError(err)
				d.log.Warn("an ordered fetch could not resume", "swarm", h, "err", err)
				continue
			}
			if from, err := peer.Decode(o.From); err == nil {
				s.AddPeers(from)
			}
		}
		d.log.Info("resuming an ordered fetch", "swarm", h, "from", o.From, "job", o.Job)
		d.watchLocked(h)
	}
	if err := d.saveLocked(); err != nil {
		d.log.Warn("saving the orders", "err", err)
	}
}

// handle answers one request of an origin.
func (d *distributor) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(distributeServe))
	from := s.Conn().RemotePeer()
	req, err := distribute.ReadRequest(bufio.NewReader(s))
	if err != nil {
		d.refused(from, err)
		s.Reset()
		return
	}
	var rep distribute.Reply
	if err := d.allow(from); err != nil {
		d.refused(from, err)
		rep = distribute.Reply{State: distribute.StateRefused, Reason: err.Error()}
	} else if req.Order != nil {
		rep = d.order(from, req.Order)
	} else {
		rep = d.status(meta.InfoHash(req.Status.Hash))
	}
	b, err := distribute.EncodeReply(rep)
	if err == nil {
		_, err = s.Write(b)
	}
	if err != nil {
		s.Reset()
	}
}

// allow applies the policy as it stands now: whether the group is closed
// can change while the peer runs.
func (d *distributor) allow(from peer.ID) error {
	p := d.policy
	p.Closed = d.n.ClosedGroup()
	return p.Allow(from, d.n.IsMember(from))
}

// refused logs a refused request, at most refusalBurst in a refusalEvery;
// the next line logged counts those left out.
func (d *distributor) refused(from peer.ID, err error) {
	d.mu.Lock()
	ok := d.refusals.Allow()
	skipped := d.suppressed
	if ok {
		d.suppressed = 0
	} else {
		d.suppressed++
	}
	d.mu.Unlock()
	if ok {
		d.log.Warn("refused a distribution request", "peer", from, "err", err, "refusals_not_logged", skipped)
	}
}

// order carries out an operator's order, or says why not.
func (d *distributor) order(from peer.ID, o *distribute.Order) distribute.Reply {
	h := meta.InfoHash(o.Hash)
	d.mu.Lock()
	old := d.orders[h]
	d.mu.Unlock()
	if old != nil && old.State != distribute.StateFailed {
		return d.status(h) // ordered again (the origin did not hear the reply): nothing to do
	}
	out := d.out
	if s := d.n.swarms.Swarm(h); s != nil && s.Err() == nil {
		// Fetched or shared here already, or being fetched: the order is
		// taken as it stands.
		if st := s.Status(); st.Path != "" {
			out = filepath.Dir(st.Path)
		}
	} else {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return distribute.Reply{State: distribute.StateFailed, Reason: "distribute_dir: " + err.Error()}
		}
		if swarm.DiskFree != nil && o.Size > 0 {
			if free, err := swarm.DiskFree(out); err == nil && free < o.Size {
				reason := fmt.Sprintf("not enough disk space: %s needs %s, %s has %s free",
					o.Name, units.FormatBytes(float64(o.Size)), out, units.FormatBytes(float64(free)))
				d.log.Warn("refused an order", "swarm", h, "from", from, "reason", reason)
				return distribute.Reply{State: distribute.StateRefused, Reason: reason}
			}
		}
		s, restarted, err := d.n.swarms.Restart(h, out)
		if !restarted {
			s, err = d.n.swarms.Get(h, out, swarm.GetOptions{Name: o.Name})
		}
		if err != nil {
			return distribute.Reply{State: distribute.StateFailed, Reason: getError(err)}
		}
		s.AddPeers(append([]peer.ID{from}, o.Hints...)...)
	}
	so := &savedOrder{InfoHash: h.String(), From: from.String(), Job: o.Job, Name: o.Name, Size: o.Size,
		Out: out, Ordered: time.Now().UTC(), State: distribute.StateFetching}
	d.mu.Lock()
	d.orders[h] = so
	err := d.saveLocked()
	if err == nil {
		d.watchLocked(h)
	}
	d.mu.Unlock()
	if err != nil {
		return distribute.Reply{State: distribute.StateFailed, Reason: "saving the order: " + err.Error()}
	}
	d.log.Info("took an order", "swarm", h, "name", o.Name, "from", from, "job", o.Job, "out", out)
	return d.status(h)
}

// status is what this peer tells of an order.
func (d *distributor) status(h meta.InfoHash) distribute.Reply {
	d.mu.Lock()
	o := d.orders[h]
	var rep distribute.Reply
	var ordered time.Time
	if o != nil {
		rep = distribute.Reply{State: o.State, Reason: o.Reason, Size: o.Size}
		ordered = o.Ordered
	}
	d.mu.Unlock()
	if o == nil {
		return distribute.Reply{State: distribute.StateUnknown}
	}
	if s := d.n.swarms.Swarm(h); s != nil {
		st := s.Status()
		rep.Have, rep.Pieces, rep.Bytes, rep.Rate = st.Have, st.Pieces, st.Downloaded, st.DownRate
		if st.Size > 0 {
			rep.Size = st.Size
		}
		if rep.State == distribute.StateFetching && st.Complete {
			rep.State = distribute.StateDone // the watcher has yet to see it
		}
		end := time.Now()
		if f := s.Finished(); !f.IsZero() {
			end = f
		}
		rep.Seconds = max(0, end.Sub(ordered).Seconds())
	}
	return rep
}

// watchLocked follows an ordered fetch to its end.
func (d *distributor) watchLocked(h meta.InfoHash) {
	if d.watching[h] {
		return
	}
	d.watching[h] = true
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.watch(h)
		d.mu.Lock()
		delete(d.watching, h)
		d.mu.Unlock()
	}()
}

func (d *distributor) watch(h meta.InfoHash) {
	start := time.Now()
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		s := d.n.swarms.Swarm(h)
		switch {
		case s == nil:
			d.finish(h, distribute.StateFailed, "the download was removed on this peer")
			return
		default:
			st := s.Status()
			switch {
			case st.Error != "":
				d.finish(h, distribute.StateFailed, st.Error)
				return
			case st.Complete:
				d.finish(h, distribute.StateDone, "")
				return
			case !st.HaveInfo && time.Since(start) > findManifest:
				_ = d.n.swarms.Remove(h)
				d.finish(h, distribute.StateFailed, fmt.Sprintf("no peer provided %s: no manifest within %v", h, findManifest))
				return
			}
		}
	}
}

// finish records the end of an ordered fetch.
func (d *distributor) finish(h meta.InfoHash, state, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	o := d.orders[h]
	if o == nil {
		return
	}
	o.State, o.Reason = state, reason
	if err := d.saveLocked(); err != nil {
		d.log.Warn("saving the orders", "err", err)
	}
	d.log.Info("an ordered fetch ended", "swarm", h, "state", state, "reason", reason, "from", o.From)
}

// ask sends one request to a target and reads its reply.
func (d *distributor) ask(ctx context.Context, p peer.ID, req distribute.Request) (distribute.Reply, error) {
	b, err := distribute.EncodeRequest(req)
	if err != nil {
		return distribute.Reply{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	s, err := d.n.overlay.OpenStream(ctx, p, distribute.Protocol, overlay.ClassLatency)
	if err != nil {
		return distribute.Reply{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if _, err := s.Write(b); err != nil {
		s.Reset()
		return distribute.Reply{}, err
	}
	_ = s.CloseWrite()
	rep, err := distribute.ReadReply(bufio.NewReader(s))
	if err != nil {
		s.Reset()
	}
	return rep, err
}

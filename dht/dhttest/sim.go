// Package dhttest runs many Chord cores in one goroutine over a simulated
// network with a seeded random source: message delay and loss, crashes,
// joins, graceful leaves and partitions. Nothing in it touches a socket or
// the wall clock, so a run is repeatable from its seed.
package dhttest

import (
	"container/heap"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	"github.com/peer-overlay/peer/dht/chord"
)

// Config shapes the simulated network.
type Config struct {
	Seed   uint64
	R      int     // successor list length (default 8)
	TickMs int64   // how often each node ticks (default 100)
	MinMs  int64   // smallest one-way delay (default 1)
	MaxMs  int64   // largest one-way delay (default 20)
	Loss   float64 // probability that a message is lost
	// Timing overrides for the cores (zero keeps chord's defaults).
	StabilizeTicks, FingerTicks, RPCTimeoutTicks, LookupTimeoutTicks int
}

// Node is one simulated peer.
type Node struct {
	Core  *chord.Node
	Peer  chord.Peer
	Alive bool
	gen   int
	group int
	// wantJoin: the node was told to join and retries until it has.
	wantJoin bool // partition group; messages cross groups only when healed
}

// Sim is the simulated network and its nodes.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    int64
	q      events
	qseq   uint64
	nodes  []*Node
	byName map[string]*Node
	cut    bool // a partition is in force

	// Steps counts events processed; Sent and Lost count messages.
	Steps, Sent, Lost int64
	// OnEvent, if set, sees every event a core emits.
	OnEvent func(n *Node, e chord.Event)
	results map[resultKey]*chord.LookupResult
}

type resultKey struct {
	node string
	id   uint64
}

// New returns an empty network.
func New(cfg Config) *Sim {
	if cfg.R <= 0 {
		cfg.R = 8
	}
	if cfg.TickMs <= 0 {
		cfg.TickMs = 100
	}
	if cfg.MinMs <= 0 {
		cfg.MinMs = 1
	}
	if cfg.MaxMs < cfg.MinMs {
		cfg.MaxMs = max(cfg.MinMs, 20)
	}
	return &Sim{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		byName:  make(map[string]*Node),
		results: make(map[resultKey]*chord.LookupResult),
	}
}

// Rand is the simulation's random source, for tests that pick victims and
// keys repeatably.
func (s *Sim) Rand() *rand.Rand { return s.rng }

// Now is the simulated time in milliseconds.
func (s *Sim) Now() int64 { return s.now }

// R is the successor list length.
func (s *Sim) R() int { return s.cfg.R }

// Nodes returns every node ever added, dead ones included.
func (s *Sim) Nodes() []*Node { return s.nodes }

// Live returns the nodes that are up, joined or not.
func (s *Sim) Live() []*Node {
	var out []*Node
	for _, n := range s.nodes {
		if n.Alive {
			out = append(out, n)
		}
	}
	return out
}

// Members returns the live nodes that are part of a ring.
func (s *Sim) Members() []*Node {
	var out []*Node
	for _, n := range s.nodes {
		if n.Alive && n.Core.Joined() {
			out = append(out, n)
		}
	}
	return out
}

// Add creates a node with a random identifier; it is up but not in a ring.
func (s *Sim) Add() *Node {
	var id chord.ID
	for i := range id {
		id[i] = byte(s.rng.UintN(256))
	}
	p := chord.Peer{ID: id, Name: hex.EncodeToString(id[:8])}
	if _, dup := s.byName[p.Name]; dup {
		return s.Add()
	}
	n := &Node{Peer: p, Alive: true, Core: s.newCore(p)}
	s.nodes = append(s.nodes, n)
	s.byName[p.Name] = n
	s.schedule(&event{at: s.now + s.rng.Int64N(s.cfg.TickMs) + 1, kind: evTick, node: n, gen: n.gen})
	return n
}

func (s *Sim) newCore(p chord.Peer) *chord.Node {
	// Each core used to take a generator seeded by two draws; the draws
	// stay so that a seed still replays the same run.
	s.rng.Uint64()
	s.rng.Uint64()
	return chord.New(chord.Config{
		Self: p, R: s.cfg.R,
		StabilizeTicks: s.cfg.StabilizeTicks, FingerTicks: s.cfg.FingerTicks,
		RPCTimeoutTicks: s.cfg.RPCTimeoutTicks, LookupTimeoutTicks: s.cfg.LookupTimeoutTicks,
	})
}

// Restart brings n back as a fresh process with the same identity: a new
// core that is in no ring, while the others may still list the old one.
// Messages on their way to the old process are lost. Join has it join
// again.
func (s *Sim) Restart(n *Node) {
	n.gen++
	n.Alive = true
	n.wantJoin = false
	n.Core = s.newCore(n.Peer)
	s.schedule(&event{at: s.now + s.rng.Int64N(s.cfg.TickMs) + 1, kind: evTick, node: n, gen: n.gen})
}

// Create makes n the first node of a new ring.
func (s *Sim) Create(n *Node) {
	n.Core.Create()
	s.drain(n)
}

// Join has n join through bootstrap.
func (s *Sim) Join(n, bootstrap *Node) {
	n.wantJoin = true
	n.Core.Join(bootstrap.Peer)
	s.drain(n)
}

// Crash stops n without a word to anyone.
func (s *Sim) Crash(n *Node) {
	n.Alive = false
	n.gen++
}

// Leave has n leave gracefully, then stop.
func (s *Sim) Leave(n *Node) {
	n.Core.Leave()
	s.drain(n)
	n.Alive = false
	n.gen++
}

// Partition splits the network: group(n) names each live node's side, and
// messages between sides are lost until Heal.
func (s *Sim) Partition(group func(*Node) int) {
	for _, n := range s.nodes {
		n.group = group(n)
	}
	s.cut = true
}

// SetLoss changes the message loss probability.
func (s *Sim) SetLoss(p float64) { s.cfg.Loss = p }

// Heal ends a partition.
func (s *Sim) Heal() { s.cut = false }

// Lookup starts a lookup at n; Result returns it once done.
func (s *Sim) Lookup(n *Node, target chord.ID) uint64 {
	id := n.Core.Lookup(target)
	s.drain(n)
	return id
}

// Result returns the outcome of lookup id started at n, nil while running.
func (s *Sim) Result(n *Node, id uint64) *chord.LookupResult {
	return s.results[resultKey{n.Peer.Name, id}]
}

// LookupAll runs one lookup per key, each from a random member, all at
// once, for at most 60 simulated seconds. Result i answers keys[i]; it is
// nil for a lookup that never finished.
func (s *Sim) LookupAll(keys []chord.ID) []*chord.LookupResult {
	members := s.Members()
	type started struct {
		n  *Node
		id uint64
	}
	st := make([]started, len(keys))
	for i, k := range keys {
		n := members[s.rng.IntN(len(members))]
		st[i] = started{n, s.Lookup(n, k)}
	}
	s.RunUntil(func() bool {
		for _, x := range st {
			if s.Result(x.n, x.id) == nil {
				return false
			}
		}
		return true
	}, 100, 60_000)
	out := make([]*chord.LookupResult, len(keys))
	for i, x := range st {
		out[i] = s.Result(x.n, x.id)
		s.Forget(x.n, x.id)
	}
	return out
}

// Forget drops a collected lookup result.
func (s *Sim) Forget(n *Node, id uint64) { delete(s.results, resultKey{n.Peer.Name, id}) }

// Step processes one event. It returns false when nothing is scheduled.
func (s *Sim) Step() bool {
	if s.q.Len() == 0 {
		return false
	}
	e := heap.Pop(&s.q).(*event)
	s.now = e.at
	s.Steps++
	switch e.kind {
	case evTick:
		n := e.node
		if !n.Alive || e.gen != n.gen {
			return true
		}
		n.Core.Tick()
		if n.wantJoin && !n.Core.Joined() && !n.Core.Joining() {
			// A failed join is retried through another member, as the
			// daemon does.
			if m := s.Members(); len(m) > 0 {
				n.Core.Join(m[s.rng.IntN(len(m))].Peer)
			}
		}
		s.drain(n)
		s.schedule(&event{at: s.now + s.cfg.TickMs, kind: evTick, node: n, gen: n.gen})
	case evDeliver:
		dst := s.byName[e.msg.To.Name]
		if dst == nil || !dst.Alive || dst.gen != e.gen {
			s.Lost++
			return true
		}
		if reply, ok := dst.Core.Step(e.msg); ok {
			s.transmit(dst, reply)
		}
		s.drain(dst)
	}
	return true
}

// RunFor processes events for ms of simulated time.
func (s *Sim) RunFor(ms int64) {
	end := s.now + ms
	for s.q.Len() > 0 && s.q[0].at <= end {
		s.Step()
	}
	s.now = end
}

// RunUntil steps until cond holds, checking it every ms of simulated time,
// for at most limit ms. It reports whether cond held.
func (s *Sim) RunUntil(cond func() bool, every, limit int64) bool {
	end := s.now + limit
	for s.now < end {
		if cond() {
			return true
		}
		s.RunFor(every)
	}
	return cond()
}

func (s *Sim) drain(n *Node) {
	if !n.Core.HasReady() {
		return
	}
	rd := n.Core.Ready()
	for _, m := range rd.Msgs {
		s.transmit(n, m)
	}
	for _, e := range rd.Events {
		if e.Kind == chord.EventLookup {
			s.results[resultKey{n.Peer.Name, e.Lookup.ID}] = e.Lookup
		}
		if s.OnEvent != nil {
			s.OnEvent(n, e)
		}
	}
}

func (s *Sim) transmit(from *Node, m chord.Message) {
	s.Sent++
	dst := s.byName[m.To.Name]
	if dst == nil || (s.cut && dst.group != from.group) || (s.cfg.Loss > 0 && s.rng.Float64() < s.cfg.Loss) {
		s.Lost++
		return
	}
	delay := s.cfg.MinMs + s.rng.Int64N(s.cfg.MaxMs-s.cfg.MinMs+1)
	s.schedule(&event{at: s.now + delay, kind: evDeliver, msg: m, gen: dst.gen})
}

func (s *Sim) schedule(e *event) {
	s.qseq++
	e.seq = s.qseq
	heap.Push(&s.q, e)
}

// Owner is the true successor of key among the live members.
func (s *Sim) Owner(key chord.ID) *Node {
	var best *Node
	var bestD chord.ID
	for _, n := range s.Members() {
		d := n.Peer.ID.Sub(key)
		if best == nil || d.Cmp(bestD) < 0 {
			best, bestD = n, d
		}
	}
	return best
}

func (n *Node) String() string { return fmt.Sprintf("%s(alive=%v)", n.Peer, n.Alive) }

const (
	evTick = iota + 1
	evDeliver
)

type event struct {
	at   int64
	seq  uint64
	kind int
	node *Node
	msg  chord.Message
	gen  int
}

type events []*event

func (q events) Len() int { return len(q) }
func (q events) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q events) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *events) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *events) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

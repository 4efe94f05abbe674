package chord

import (
	"slices"

	"github.com/peer-overlay/peer/internal/defaults"
)

// Config sets a node's identity and timing. Times are in ticks: the binding
// calls Tick at a fixed interval (the daemon uses 100 ms).
type Config struct {
	Self Peer
	// R is the length of the successor list, and the number of copies of
	// each record. Default 8.
	R int
	// StabilizeTicks between stabilize rounds. Default 5.
	StabilizeTicks int
	// FingerTicks between finger refreshes (one lookup each). Default 1.
	FingerTicks int
	// FingerRoundTicks is the least time from the start of one pass over
	// the finger table to the next. Default 100.
	FingerRoundTicks int
	// RPCTimeoutTicks after which an unanswered request counts as failed.
	// Default 5.
	RPCTimeoutTicks int
	// LookupTimeoutTicks bounds a whole lookup. Default 50.
	LookupTimeoutTicks int
	// FailLimit is how many requests in a row a peer may leave unanswered
	// before it is taken for dead. Default 3.
	FailLimit int
	// DeadTicks is how long a peer that failed to answer is left out of
	// successor lists learned from others, and how long one failure is
	// remembered. Default 50, and at least (R+2)·RPCTimeoutTicks.
	DeadTicks int
}

func (c *Config) fill() {
	defaults.Set(&c.R, 8)
	defaults.Set(&c.StabilizeTicks, 5)
	defaults.Set(&c.FingerTicks, 1)
	defaults.Set(&c.FingerRoundTicks, 100)
	defaults.Set(&c.RPCTimeoutTicks, 5)
	defaults.Set(&c.LookupTimeoutTicks, 50)
	// A failure must still count when stabilize comes back to the same
	// peer after trying each of the others once.
	defaults.Set(&c.DeadTicks, max(50, (c.R+2)*c.RPCTimeoutTicks))
	defaults.Set(&c.FailLimit, 3)
}

// EventKind says what changed.
type EventKind uint8

const (
	// EventJoined: the node has a successor and is part of the ring.
	EventJoined EventKind = iota + 1
	// EventJoinFailed: the join lookup or the check of the successor
	// failed; Err says why. The binding retries.
	EventJoinFailed
	// EventSuccessors: the successor list changed.
	EventSuccessors
	// EventPredecessor: the predecessor changed (Peer; zero when unknown).
	EventPredecessor
	// EventLookup: a lookup finished (Lookup).
	EventLookup
)

// Event is a change the binding may act on.
type Event struct {
	Kind   EventKind
	Peer   Peer
	Lookup *LookupResult
	Err    error
}

// Ready is what the node has to say since the last call: messages to send
// and events.
type Ready struct {
	Msgs   []Message
	Events []Event
}

// rpcKind says why a request was sent, so its reply or timeout is handled
// by the right step.
type rpcKind uint8

const (
	rpcStabSucc  rpcKind = iota + 1 // GetState to the first successor
	rpcStabCheck                    // GetState to a candidate successor, to check it is live
	rpcRectify                      // Ping to the predecessor, candidate in hand
	rpcFind                         // Find on behalf of a lookup
	rpcJoinCheck                    // GetState to the successor found by a join lookup
)

type rpc struct {
	kind     rpcKind
	to       Peer
	deadline uint64
	lookup   uint64 // rpcFind
	cand     Peer   // rpcRectify: the notifier
	rest     []Peer // rpcJoinCheck: the successors after to, tried in turn
}

// notifier is a peer that notified us, and when it last did.
type notifier struct {
	p    Peer
	last uint64
}

// maxNotifiers bounds the notifiers a node remembers.
const maxNotifiers = 1024

// failures counts requests to one peer that went unanswered in a row.
type failures struct {
	count int
	last  uint64 // tick of the latest
}

// Node is one peer's Chord state machine. It is not safe for concurrent
// use: the binding drives it from one goroutine.
type Node struct {
	cfg  Config
	self Peer
	now  uint64

	joined  bool
	joining bool
	left    bool
	pred    Peer
	succ    []Peer
	fingers [IDBits]Peer

	nextFinger   int
	roundStart   uint64 // tick at which the current finger round began
	table        []Peer // fingers and successors, clockwise from self; nil when stale
	fingerLookup uint64 // lookup in flight for fingers, 0 if none
	nextStab     uint64
	nextFix      uint64
	stabBusy     bool
	rectBusy     bool

	dead map[string]uint64 // peer name → tick until which it is left out
	// notifiers are peers that lately named us their successor, the
	// closest maxNotifiers of them; see closerFor.
	notifiers map[string]notifier
	fails     map[string]failures
	pending   map[uint64]*rpc
	lookups   map[uint64]*lookup
	seq       uint64

	out    []Message
	events []Event
}

// New returns a node that is not yet in a ring: call Create or Join.
func New(cfg Config) *Node {
	cfg.fill()
	return &Node{
		cfg:       cfg,
		self:      cfg.Self,
		dead:      make(map[string]uint64),
		notifiers: make(map[string]notifier),
		fails:     make(map[string]failures),
		pending:   make(map[uint64]*rpc),
		lookups:   make(map[uint64]*lookup),
	}
}

// Self is this node.
func (n *Node) Self() Peer { return n.self }

// Joined reports whether the node is part of a ring.
func (n *Node) Joined() bool { return n.joined }

// Joining reports whether a join is under way.
func (n *Node) Joining() bool { return n.joining }

// Pred is the predecessor, zero when unknown.
func (n *Node) Pred() Peer { return n.pred }

// Succs is a copy of the successor list. A ring smaller than R+1 ends the
// list with the node itself.
func (n *Node) Succs() []Peer { return slices.Clone(n.succ) }

// Successor is the first entry of the successor list (the node itself when
// alone, zero before joining).
func (n *Node) Successor() Peer {
	if len(n.succ) == 0 {
		return Peer{}
	}
	return n.succ[0]
}

// Fingers lists the distinct finger entries in clockwise order.
func (n *Node) Fingers() []Peer {
	var out []Peer
	for _, f := range n.fingers {
		if f.IsZero() || (len(out) > 0 && out[len(out)-1] == f) {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Finger returns finger k (zero if unknown).
func (n *Node) Finger(k int) Peer { return n.fingers[k] }

// Owns reports whether key falls in (predecessor, self]: whether this node
// believes it is the key's successor. False while the predecessor is
// unknown, unless the node is alone.
func (n *Node) Owns(key ID) bool {
	if !n.joined {
		return false
	}
	if n.pred.IsZero() {
		return len(n.succ) > 0 && n.succ[0] == n.self
	}
	return BetweenRightIncl(key, n.pred.ID, n.self.ID)
}

// Ready returns and clears the pending messages and events.
func (n *Node) Ready() Ready {
	r := Ready{Msgs: n.out, Events: n.events}
	n.out, n.events = nil, nil
	return r
}

// HasReady reports whether Ready has anything.
func (n *Node) HasReady() bool { return len(n.out) > 0 || len(n.events) > 0 }

// Create starts a new ring with this node alone in it.
func (n *Node) Create() {
	n.joined, n.joining, n.left = true, false, false
	n.pred = Peer{}
	n.setSucc([]Peer{n.self})
	n.emit(Event{Kind: EventJoined, Peer: n.self})
}

// Join enters the ring that bootstrap belongs to: a lookup of this node's
// own identifier through bootstrap finds its successor, which is then asked
// for its successor list (Zave's join).
func (n *Node) Join(bootstrap Peer) {
	if n.joined || n.joining {
		return
	}
	if bootstrap.IsZero() || bootstrap.Name == n.self.Name {
		n.Create()
		return
	}
	n.joining, n.left = true, false
	n.startLookup(n.self.ID, lookupJoin, []Peer{bootstrap}, 0)
}

// Leave hands the node's neighbours what they need to close the gap: the
// predecessor gets the successor list, the successor gets the predecessor.
// The node stops taking part afterwards.
func (n *Node) Leave() {
	if !n.joined {
		return
	}
	if !n.pred.IsZero() && n.pred != n.self {
		n.send(Message{Type: MsgLeaving, To: n.pred, Pred: n.pred, Nodes: slices.Clone(n.succ)})
	}
	if s := n.Successor(); !s.IsZero() && s != n.self && s != n.pred {
		n.send(Message{Type: MsgLeaving, To: s, Pred: n.pred, Nodes: slices.Clone(n.succ)})
	}
	n.joined, n.joining, n.left = false, false, true
	n.pred, n.succ = Peer{}, nil
	n.fingers = [IDBits]Peer{}
	n.table = nil
	clear(n.pending)
	clear(n.notifiers)
	for id := range n.lookups {
		n.finishLookup(id, Peer{}, nil, ErrLeft)
	}
}

// PeerDead tells the node that p has failed (the membership layer saw it
// die): it is dropped from the successor list, fingers and predecessor at
// once, and left out of lists learned from others for a while.
func (n *Node) PeerDead(p Peer) {
	if p.Name == n.self.Name {
		return
	}
	n.markDead(p)
}

// Tick advances the node's clock by one tick: stabilize, refresh a finger,
// and expire requests that went unanswered.
func (n *Node) Tick() {
	n.now++
	n.expire()
	if !n.joined {
		return
	}
	if n.now >= n.nextStab {
		n.nextStab = n.now + uint64(n.cfg.StabilizeTicks)
		n.stabilize()
	}
	if n.now >= n.nextFix {
		n.nextFix = n.now + uint64(n.cfg.FingerTicks)
		n.fixFinger()
	}
}

// Step hands the node one message. For a request it returns the reply to
// send back (ok true).
func (n *Node) Step(m Message) (reply Message, ok bool) {
	if m.From.Name == n.self.Name || m.From.IsZero() {
		return Message{}, false
	}
	// Anyone who talks to us is alive.
	delete(n.dead, m.From.Name)
	delete(n.fails, m.From.Name)
	switch m.Type {
	case MsgPing:
		// A node in no ring (restarted with the same identity, say, and
		// not joined yet) is no one's live predecessor: it does not
		// answer, so a successor that still points at it moves on.
		if !n.joined {
			return Message{}, false
		}
		return n.reply(m, Message{Type: MsgPong}), true
	case MsgGetState:
		// A State without a successor list says "in no ring": a member's
		// list always has an entry (itself, when alone). Askers neither
		// adopt it nor keep the node as a successor; see notMember.
		if !n.joined {
			return n.reply(m, Message{Type: MsgState}), true
		}
		return n.reply(m, Message{Type: MsgState, Pred: n.closerFor(m.From), Nodes: slices.Clone(n.succ)}), true
	case MsgFind:
		// Likewise a Found that is not done and offers no next hop comes
		// only from a node in no ring (route).
		done, nodes := n.route(m.Target)
		return n.reply(m, Message{Type: MsgFound, Target: m.Target, Done: done, Nodes: nodes}), true
	case MsgNotify:
		n.noteNotifier(m.From)
		n.rectify(m.From)
	case MsgLeaving:
		n.onLeaving(m)
	case MsgPong, MsgState, MsgFound:
		n.onReply(m)
	}
	return Message{}, false
}

// Unreachable tells the node that the request it sent with seq could not be
// delivered (a dial or stream failure): handled as a timeout, without
// waiting for one.
func (n *Node) Unreachable(seq uint64) {
	if r, ok := n.pending[seq]; ok {
		delete(n.pending, seq)
		n.onTimeout(seq, r)
	}
}

func (n *Node) reply(req, m Message) Message {
	m.From, m.To, m.Seq = n.self, req.From, req.Seq
	return m
}

func (n *Node) emit(e Event) { n.events = append(n.events, e) }

// send queues a one-way message.
func (n *Node) send(m Message) {
	m.From = n.self
	n.out = append(n.out, m)
}

// request queues a request and remembers why it was sent.
func (n *Node) request(m Message, r *rpc) uint64 {
	n.seq++
	m.Seq = n.seq
	r.to = m.To
	r.deadline = n.now + uint64(n.cfg.RPCTimeoutTicks)
	n.pending[m.Seq] = r
	n.send(m)
	return m.Seq
}

// expire handles requests and lookups past their deadline, in the order
// they were made, so that a run is repeatable.
func (n *Node) expire() {
	var due []uint64
	for seq, r := range n.pending {
		if n.now >= r.deadline {
			due = append(due, seq)
		}
	}
	slices.Sort(due)
	for _, seq := range due {
		if r, ok := n.pending[seq]; ok {
			delete(n.pending, seq)
			n.onTimeout(seq, r)
		}
	}
	due = due[:0]
	for id, l := range n.lookups {
		if n.now >= l.deadline {
			due = append(due, id)
		}
	}
	slices.Sort(due)
	for _, id := range due {
		n.finishLookup(id, Peer{}, nil, ErrLookupTimeout)
	}
}

func (n *Node) onReply(m Message) {
	r, ok := n.pending[m.Seq]
	if !ok || r.to.Name != m.From.Name {
		return // late, duplicate or forged: ignore
	}
	delete(n.pending, m.Seq)
	switch r.kind {
	case rpcStabSucc:
		switch {
		case m.Type != MsgState:
		case len(m.Nodes) == 0:
			// The successor is in no ring: its empty list is not ours to
			// take (that would cut our list down to it alone). Leave it
			// out and ask the next one at once, as after a timeout.
			n.stabBusy = false
			n.notMember(m.From)
			n.stabilize()
		default:
			n.onSuccState(m)
		}
	case rpcStabCheck:
		n.stabBusy = false
		switch {
		case m.Type != MsgState:
		case len(m.Nodes) == 0:
			// The candidate is in no ring: keep the list we have and start
			// the round again soon, as when it does not answer.
			n.notMember(m.From)
			n.nextStab = n.now + 1
		default:
			n.adopt(append([]Peer{m.From}, m.Nodes...))
		}
	case rpcRectify:
		n.rectBusy = false // the predecessor is alive: keep it
	case rpcJoinCheck:
		switch {
		case m.Type != MsgState:
		case len(m.Nodes) == 0:
			n.notMember(m.From)
			n.joinCheckNext(r.rest, errJoinNotMember)
		default:
			n.joining, n.joined = false, true
			n.adopt(append([]Peer{m.From}, m.Nodes...))
			n.nextStab = n.now + 1
			n.emit(Event{Kind: EventJoined, Peer: n.self})
		}
	case rpcFind:
		if m.Type == MsgFound {
			n.onFound(r.lookup, m)
		}
	}
}

func (n *Node) onTimeout(_ uint64, r *rpc) {
	switch r.kind {
	case rpcStabSucc:
		n.stabBusy = false
		n.failed(r.to)
		if n.joined {
			n.stabilize() // ask again, or the next successor once this one is dead
		}
	case rpcStabCheck:
		// The candidate did not answer: keep the list we have and start
		// the round again soon (the successor's answer may be stale by now).
		n.stabBusy = false
		n.failed(r.to)
		n.nextStab = n.now + 1
	case rpcRectify:
		n.rectBusy = false
		if n.pred != r.to {
			return
		}
		if n.failed(r.to) {
			n.setPred(r.cand)
		} else {
			n.rectify(r.cand) // ask once more
		}
	case rpcJoinCheck:
		n.failed(r.to)
		n.joinCheckNext(r.rest, errJoinCheck)
	case rpcFind:
		n.failed(r.to)
		n.onFindTimeout(r.lookup, r.to)
	}
}

// failed counts a request to p that went unanswered; after FailLimit in a
// row p is taken for dead. One lost message is not a failure.
func (n *Node) failed(p Peer) (dead bool) {
	f := n.fails[p.Name]
	if n.now > f.last+uint64(n.cfg.DeadTicks) {
		f.count = 0 // an old failure does not count towards this one
	}
	f.count++
	f.last = n.now
	if f.count < n.cfg.FailLimit {
		n.fails[p.Name] = f
		return false
	}
	delete(n.fails, p.Name)
	n.markDead(p)
	return true
}

// suspect reports whether p failed to answer lately.
func (n *Node) suspect(p Peer) bool {
	f, ok := n.fails[p.Name]
	return ok && n.now <= f.last+uint64(n.cfg.DeadTicks)
}

// stabilize asks the first successor for its predecessor and successor
// list (Zave's stabilize). A lone node looks at its own predecessor.
func (n *Node) stabilize() {
	if n.stabBusy || !n.joined {
		return
	}
	s := n.Successor()
	if s == n.self {
		if p := n.pred; !p.IsZero() && p != n.self {
			n.stabBusy = true
			n.request(Message{Type: MsgGetState, To: p}, &rpc{kind: rpcStabCheck})
		}
		return
	}
	// Ask the first successor that has not just failed to answer; a
	// suspect is asked again only when everything after it is suspect too.
	for _, c := range n.succ {
		if c == n.self {
			break
		}
		if !n.suspect(c) {
			s = c
			break
		}
	}
	n.stabBusy = true
	n.request(Message{Type: MsgGetState, To: s}, &rpc{kind: rpcStabSucc})
}

// onSuccState handles the successor's answer: a predecessor of the
// successor that lies between us is adopted only once it has answered.
func (n *Node) onSuccState(m Message) {
	s := m.From
	list := append([]Peer{s}, m.Nodes...)
	// A candidate we already found dead is passed over: the successor
	// learns better once we notify it.
	if p := m.Pred; !p.IsZero() && p.Name != n.self.Name && Between(p.ID, n.self.ID, s.ID) && !n.isDead(p) {
		n.request(Message{Type: MsgGetState, To: p}, &rpc{kind: rpcStabCheck})
		return
	}
	n.stabBusy = false
	n.adopt(list)
}

// adopt takes list as the new successor list and tells the first entry
// about us.
func (n *Node) adopt(list []Peer) {
	if !n.joined {
		return
	}
	old := n.Successor()
	n.setSucc(list)
	if s := n.Successor(); s != old && s != n.self {
		// A new successor may know a closer one still: ask it soon
		// rather than a whole stabilize period later.
		n.nextStab = min(n.nextStab, n.now+1)
	}
	if s := n.Successor(); s != n.self {
		n.send(Message{Type: MsgNotify, To: s})
	}
}

// rectify is Zave's replacement for notify and check_predecessor: the
// notifier becomes the predecessor if it lies between the current one and
// us, or once the current one fails to answer.
func (n *Node) rectify(cand Peer) {
	if !n.joined || cand == n.pred {
		return
	}
	if n.pred.IsZero() || n.pred == n.self || Between(cand.ID, n.pred.ID, n.self.ID) {
		n.setPred(cand)
		return
	}
	if !n.rectBusy {
		n.rectBusy = true
		n.request(Message{Type: MsgPing, To: n.pred}, &rpc{kind: rpcRectify, cand: cand})
	}
}

func (n *Node) onLeaving(m Message) {
	if !n.joined {
		return
	}
	x := m.From
	n.dead[x.Name] = n.now + uint64(n.cfg.DeadTicks)
	if i := slices.Index(n.succ, x); i >= 0 {
		list := append(slices.Clone(n.succ[:i]), m.Nodes...)
		list = append(list, n.succ[i+1:]...)
		n.adopt(list)
	}
	if n.pred == x {
		p := m.Pred
		if p.Name == n.self.Name {
			p = Peer{}
		}
		n.setPred(p)
	}
	n.dropFinger(x)
}

// markDead drops p everywhere and keeps it out of learned lists for a while.
func (n *Node) markDead(p Peer) { n.exclude(p, n.now+uint64(n.cfg.DeadTicks)) }

// notMember handles a peer that answered that it is in no ring: a peer
// restarted with the same identity before anyone took it for dead, say,
// which others still list. It is alive, so this is no failure, but it is
// nobody's successor, predecessor or finger until it has joined: it is
// dropped from all of them and left out of lists learned from others for
// two stabilize rounds, after which it is asked again if someone names it.
func (n *Node) notMember(p Peer) { n.exclude(p, n.now+uint64(2*n.cfg.StabilizeTicks)) }

// exclude drops p everywhere and keeps it out of learned lists until the
// given tick (or later, if it already was).
func (n *Node) exclude(p Peer, until uint64) {
	if p.IsZero() || p.Name == n.self.Name {
		return
	}
	if until > n.dead[p.Name] {
		n.dead[p.Name] = until
	}
	delete(n.notifiers, p.Name)
	n.dropFinger(p)
	if n.pred.Name == p.Name {
		n.setPred(Peer{})
	}
	if slices.ContainsFunc(n.succ, func(q Peer) bool { return q.Name == p.Name }) {
		n.setSucc(n.succ)
	}
}

func (n *Node) isDead(p Peer) bool {
	until, ok := n.dead[p.Name]
	if !ok {
		return false
	}
	if n.now >= until {
		delete(n.dead, p.Name)
		return false
	}
	return true
}

func (n *Node) dropFinger(p Peer) {
	for k := range n.fingers {
		if n.fingers[k].Name == p.Name {
			n.setFinger(k, Peer{})
		}
	}
}

func (n *Node) setPred(p Peer) {
	if p == n.pred {
		return
	}
	n.pred = p
	n.emit(Event{Kind: EventPredecessor, Peer: p})
}

// setSucc normalizes list into a successor list: entries in strictly
// increasing clockwise distance from us, no duplicates, none known dead,
// at most R, and ending at ourselves if the ring is that small. If nothing
// is left, the closest live finger stands in (it lies clockwise, so the
// ring stays ordered), and failing that the node is alone.
func (n *Node) setSucc(list []Peer) {
	out := n.normalize(list)
	if len(out) == 0 {
		for _, f := range n.fingers {
			if !f.IsZero() && !n.isDead(f) {
				out = []Peer{f}
				break
			}
		}
	}
	if len(out) == 0 {
		out = []Peer{n.self}
	}
	if slices.Equal(out, n.succ) {
		return
	}
	n.succ = out
	n.table = nil
	n.emit(Event{Kind: EventSuccessors})
}

func (n *Node) normalize(list []Peer) []Peer {
	out := make([]Peer, 0, n.cfg.R)
	var last ID
	for _, p := range list {
		if p.IsZero() {
			continue
		}
		if p.Name == n.self.Name {
			out = append(out, n.self)
			break
		}
		if n.isDead(p) {
			continue
		}
		d := p.ID.Sub(n.self.ID)
		if d == (ID{}) || (len(out) > 0 && d.Cmp(last) <= 0) {
			continue // our own ID under another name, out of order, or a duplicate
		}
		out = append(out, p)
		last = d
		if len(out) == n.cfg.R {
			break
		}
	}
	return out
}

// fixFinger refreshes the next finger: from the successor list or the
// previous finger when they already answer it, else by a lookup.
func (n *Node) fixFinger() {
	if n.fingerLookup != 0 {
		return
	}
	if n.nextFinger == 0 {
		if n.roundStart != 0 && n.now < n.roundStart+uint64(n.cfg.FingerRoundTicks) {
			return
		}
		n.roundStart = n.now
	}
	for n.nextFinger < IDBits {
		k := n.nextFinger
		n.nextFinger++
		start := n.self.ID.FingerStart(k)
		if owner, ok := n.ownerFromList(start); ok {
			n.setFinger(k, owner)
			continue
		}
		if k > 0 && !n.fingers[k-1].IsZero() && BetweenRightIncl(start, n.self.ID.FingerStart(k-1), n.fingers[k-1].ID) {
			n.setFinger(k, n.fingers[k-1])
			continue
		}
		id := n.startLookup(start, lookupFinger, nil, k)
		if _, ok := n.lookups[id]; ok {
			n.fingerLookup = id
		}
		return
	}
	n.nextFinger = 0
}

func (n *Node) setFinger(k int, p Peer) {
	if n.fingers[k] != p {
		n.fingers[k] = p
		n.table = nil
	}
}

// routingTable is every distinct finger and successor, sorted clockwise
// from this node. It is rebuilt only after a change.
func (n *Node) routingTable() []Peer {
	if n.table != nil {
		return n.table
	}
	t := make([]Peer, 0, 2*n.cfg.R+16)
	add := func(p Peer) {
		if !p.IsZero() && p.Name != n.self.Name {
			t = append(t, p)
		}
	}
	for _, s := range n.succ {
		add(s)
	}
	var last Peer
	for _, f := range n.fingers {
		if f != last {
			add(f)
			last = f
		}
	}
	self := n.self.ID
	slices.SortFunc(t, func(a, b Peer) int { return a.ID.Sub(self).Cmp(b.ID.Sub(self)) })
	t = slices.CompactFunc(t, func(a, b Peer) bool { return a.Name == b.Name })
	n.table = t
	return t
}

// ownerFromList answers "who is successor(key)?" from the successor list
// alone, when key falls within it.
func (n *Node) ownerFromList(key ID) (Peer, bool) {
	prev := n.self.ID
	for _, s := range n.succ {
		if BetweenRightIncl(key, prev, s.ID) {
			return s, true
		}
		if s == n.self {
			break
		}
		prev = s.ID
	}
	return Peer{}, false
}

// noteNotifier remembers p, which just named us its successor. When many
// peers join at once they all find the same successor; the predecessor
// alone would let them sort themselves out one stabilize round per peer,
// while the notifiers let each find its true successor at once.
func (n *Node) noteNotifier(p Peer) {
	if !n.joined {
		return
	}
	n.notifiers[p.Name] = notifier{p: p, last: n.now}
	if len(n.notifiers) <= maxNotifiers {
		return
	}
	// Forget the stale ones, then the farthest from us.
	keep := uint64(3 * n.cfg.StabilizeTicks)
	var far string
	var farD ID
	for name, x := range n.notifiers {
		if n.now > x.last+keep {
			delete(n.notifiers, name)
			continue
		}
		if d := n.self.ID.Sub(x.p.ID); far == "" || d.Cmp(farD) > 0 || (d == farD && name > far) {
			far, farD = name, d
		}
	}
	if len(n.notifiers) > maxNotifiers {
		delete(n.notifiers, far)
	}
}

// closerFor answers a GetState from asker with the peer closest after the
// asker that this node knows to lie before it: the predecessor, or a recent
// notifier that is closer to the asker. In a settled ring that is the
// predecessor; after a crowd joined through one successor, it is each
// joiner's own successor among the crowd.
func (n *Node) closerFor(asker Peer) Peer {
	best := n.pred
	if best.IsZero() || best == n.self || !Between(best.ID, asker.ID, n.self.ID) {
		best = Peer{}
	}
	keep := uint64(3 * n.cfg.StabilizeTicks)
	for _, x := range n.notifiers {
		c := x.p
		if n.now > x.last+keep || c.Name == asker.Name || !Between(c.ID, asker.ID, n.self.ID) || n.isDead(c) {
			continue
		}
		if best.IsZero() || c.ID.Sub(asker.ID).Cmp(best.ID.Sub(asker.ID)) < 0 {
			best = c
		}
	}
	if best.IsZero() {
		return n.pred
	}
	return best
}

package chord

import (
	"errors"
	"slices"
)

// Errors a lookup or join can end with.
var (
	ErrLookupTimeout = errors.New("chord: lookup timed out")
	ErrNoRoute       = errors.New("chord: lookup ran out of peers to ask")
	ErrNotJoined     = errors.New("chord: not part of a ring yet")
	ErrLeft          = errors.New("chord: node left the ring")
	errJoinCheck     = errors.New("chord: the successor found by the join lookup did not answer")
	errJoinNotMember = errors.New("chord: the successors found by the join lookup are in no ring")
)

// maxCandidates is how many next hops a Found reply offers: the closest
// one and alternates to fall back on when it is dead.
const maxCandidates = 4

type lookupKind uint8

const (
	lookupUser lookupKind = iota + 1
	lookupJoin
	lookupFinger
	lookupMerge
)

// LookupResult is the answer to Lookup.
type LookupResult struct {
	ID     uint64
	Target ID
	// Owner is successor(Target). Succs starts with Owner and continues
	// with its successors, as far as the answering node knew them: the
	// replica set of a record stored at Target.
	Owner    Peer
	Succs    []Peer
	Hops     int // peers asked (0 when the node answered from its own state)
	Timeouts int // peers that failed to answer on the way
	Err      error
}

type lookup struct {
	id       uint64
	kind     lookupKind
	target   ID
	finger   int
	cands    []Peer // not yet asked, closest to target first
	tried    map[string]struct{}
	hops     int
	timeouts int
	deadline uint64
}

// Lookup starts an iterative lookup of successor(target); its result comes
// as an EventLookup carrying the returned id.
func (n *Node) Lookup(target ID) uint64 { return n.startLookup(target, lookupUser, nil, 0) }

// Merge looks for this node's successor through via, a peer the membership
// layer knows but that may sit in another ring (after a partition heals).
// A closer successor found that way is checked and adopted, which joins the
// two rings into one.
func (n *Node) Merge(via Peer) {
	if !n.joined || via.IsZero() || via.Name == n.self.Name {
		return
	}
	n.startLookup(n.self.ID.Add(PowerOfTwo(0)), lookupMerge, []Peer{via}, 0)
}

func (n *Node) startLookup(target ID, kind lookupKind, start []Peer, finger int) uint64 {
	n.seq++
	l := &lookup{
		id: n.seq, kind: kind, target: target, finger: finger,
		tried:    make(map[string]struct{}),
		deadline: n.now + uint64(n.cfg.LookupTimeoutTicks),
	}
	n.lookups[l.id] = l
	if start == nil {
		if !n.joined {
			n.finishLookup(l.id, Peer{}, nil, ErrNotJoined)
			return l.id
		}
		done, nodes := n.route(target)
		if done {
			n.finishLookup(l.id, nodes[0], nodes, nil)
			return l.id
		}
		start = nodes
	}
	for _, p := range start {
		n.addCand(l, p)
	}
	n.nextHop(l)
	return l.id
}

// route is one hop of a lookup at this node: either the answer (the owner
// and its successors) when target falls between us and an entry of our
// successor list, or up to maxCandidates peers closer to target.
func (n *Node) route(target ID) (done bool, nodes []Peer) {
	if !n.joined || len(n.succ) == 0 {
		return false, nil
	}
	if !n.pred.IsZero() && n.pred != n.self && BetweenRightIncl(target, n.pred.ID, n.self.ID) {
		return true, n.withSelf()
	}
	prev := n.self.ID
	for i, s := range n.succ {
		if BetweenRightIncl(target, prev, s.ID) {
			return true, slices.Clone(n.succ[i:])
		}
		if s == n.self {
			break
		}
		prev = s.ID
	}
	return false, n.closestPreceding(target)
}

// withSelf is this node followed by its successors, without repeating it.
func (n *Node) withSelf() []Peer {
	out := []Peer{n.self}
	for _, s := range n.succ {
		if s == n.self || len(out) == n.cfg.R {
			break
		}
		out = append(out, s)
	}
	return out
}

// closestPreceding returns up to maxCandidates known live peers in
// (self, target), the closest to target first: fingers and successors
// alike.
func (n *Node) closestPreceding(target ID) []Peer {
	t := n.routingTable()
	dt := target.Sub(n.self.ID)
	// The entries before i lie in (self, target).
	i, _ := slices.BinarySearchFunc(t, dt, func(p Peer, d ID) int { return p.ID.Sub(n.self.ID).Cmp(d) })
	var out []Peer
	for j := i - 1; j >= 0 && len(out) < maxCandidates; j-- {
		if !n.isDead(t[j]) {
			out = append(out, t[j])
		}
	}
	return out
}

// addCand inserts p into l's candidates, kept sorted closest to the target
// first.
func (n *Node) addCand(l *lookup, p Peer) {
	if p.IsZero() || p.Name == n.self.Name || n.isDead(p) {
		return
	}
	if _, ok := l.tried[p.Name]; ok {
		return
	}
	d := l.target.Sub(p.ID)
	i, found := slices.BinarySearchFunc(l.cands, d, func(c Peer, d ID) int { return l.target.Sub(c.ID).Cmp(d) })
	if found && l.cands[i] == p {
		return
	}
	l.cands = slices.Insert(l.cands, i, p)
}

// nextHop asks the closest untried candidate.
func (n *Node) nextHop(l *lookup) {
	for len(l.cands) > 0 {
		p := l.cands[0]
		l.cands = l.cands[1:]
		if _, ok := l.tried[p.Name]; ok || n.isDead(p) {
			continue
		}
		l.tried[p.Name] = struct{}{}
		n.request(Message{Type: MsgFind, To: p, Target: l.target}, &rpc{kind: rpcFind, lookup: l.id})
		return
	}
	n.finishLookup(l.id, Peer{}, nil, ErrNoRoute)
}

func (n *Node) onFound(id uint64, m Message) {
	l, ok := n.lookups[id]
	if !ok {
		return
	}
	l.hops++
	if m.Done && len(m.Nodes) > 0 && !m.Nodes[0].IsZero() {
		n.finishLookup(id, m.Nodes[0], m.Nodes, nil)
		return
	}
	if !m.Done && len(m.Nodes) == 0 {
		// Only a node in no ring has no next hop to offer (route): leave
		// it out of fingers and successors until it joins.
		n.notMember(m.From)
	}
	// Only peers strictly closer to the target than the one who answered
	// count: every hop makes progress, so a lookup cannot loop.
	for _, p := range m.Nodes {
		if Between(p.ID, m.From.ID, l.target) {
			n.addCand(l, p)
		}
	}
	n.nextHop(l)
}

func (n *Node) onFindTimeout(id uint64, _ Peer) {
	l, ok := n.lookups[id]
	if !ok {
		return
	}
	l.timeouts++
	n.nextHop(l)
}

func (n *Node) finishLookup(id uint64, owner Peer, succs []Peer, err error) {
	l, ok := n.lookups[id]
	if !ok {
		return
	}
	delete(n.lookups, id)
	// Drop the Find still in flight for this lookup, if any.
	for seq, r := range n.pending {
		if r.kind == rpcFind && r.lookup == id {
			delete(n.pending, seq)
		}
	}
	switch l.kind {
	case lookupUser:
		n.emit(Event{Kind: EventLookup, Lookup: &LookupResult{
			ID: id, Target: l.target, Owner: owner, Succs: slices.Clone(succs),
			Hops: l.hops, Timeouts: l.timeouts, Err: err,
		}})
	case lookupFinger:
		n.fingerLookup = 0
		if err == nil && owner.Name != n.self.Name {
			n.setFinger(l.finger, owner)
		} else if err == nil {
			n.setFinger(l.finger, Peer{})
		}
	case lookupJoin:
		if n.left || n.joined {
			return
		}
		if err != nil {
			n.joining = false
			n.emit(Event{Kind: EventJoinFailed, Err: err})
			return
		}
		// A peer restarted with the same identity may still be listed by
		// the ring; its successors are then ours. The first that answers
		// as a member of the ring is asked for its list.
		var rest []Peer
		for _, p := range succs {
			if p.Name != n.self.Name && !p.IsZero() && !n.isDead(p) {
				rest = append(rest, p)
			}
		}
		n.joinCheckNext(rest, ErrNoRoute)
	case lookupMerge:
		if err != nil || !n.joined || n.stabBusy {
			return
		}
		if s := n.Successor(); owner.Name != n.self.Name && !owner.IsZero() && Between(owner.ID, n.self.ID, s.ID) {
			n.stabBusy = true
			n.request(Message{Type: MsgGetState, To: owner}, &rpc{kind: rpcStabCheck})
		}
	}
}

// joinCheckNext asks the first of cands, the successors a join lookup
// found, for its state; once none is left the join fails with err.
func (n *Node) joinCheckNext(cands []Peer, err error) {
	if n.left || n.joined || !n.joining {
		return
	}
	for len(cands) > 0 && n.isDead(cands[0]) {
		cands = cands[1:]
	}
	if len(cands) == 0 {
		n.joining = false
		n.emit(Event{Kind: EventJoinFailed, Err: err})
		return
	}
	n.request(Message{Type: MsgGetState, To: cands[0]}, &rpc{kind: rpcJoinCheck, rest: cands[1:]})
}

package dht

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/overlay"
)

// Timing of the binding. The core counts in ticks of TickInterval.
const (
	TickInterval   = 100 * time.Millisecond
	rpcTimeout     = 2 * time.Second
	firstTry       = time.Second // of rpcTimeout, before a request is retried
	maintainEvery  = 10 * time.Second
	joinRetryEvery = time.Second
	// foundWait: a peer without bootstrap peers whose record store holds
	// records has been in a ring before (it restarted) and may still be
	// listed there: it founds a ring of its own only if it has not joined
	// one through a member within this long.
	foundWait = 5 * time.Second
	// DefaultTTL is how long a record lives when the writer names no TTL.
	DefaultTTL = 24 * time.Hour
)

// Errors callers can test for.
var (
	ErrNotFound  = errors.New("dht: no such key")
	ErrNotJoined = errors.New("dht: not part of a ring yet")
	ErrClosed    = errors.New("dht: closed")
)

// Config configures the binding.
type Config struct {
	R   int          // successor list length and copies per record (default 8)
	Log *slog.Logger // where to log
}

// DHT is the Chord ring of one peer, carried over overlay streams, with
// its record store.
type DHT struct {
	ov    *overlay.Overlay
	h     host.Host
	priv  crypto.PrivKey
	store *record.Store
	log   *slog.Logger
	self  chord.Peer
	r     int

	in     chan func()
	core   *chord.Node // touched only by the loop goroutine
	wait   map[uint64]chan *chord.LookupResult
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	badPeers map[peer.ID]bool // peers already logged for a bad message
	// asker is the peer that last sent us a Chord message: a way into the
	// ring for a peer that restarted and knows no member yet.
	asker peer.ID

	replicatePending bool
	replicating      sync.Mutex // held while a replication round runs

	mail mailLimiter // per-sender message rates
}

// PeerOf returns the ring position of a libp2p peer.
func PeerOf(id peer.ID) chord.Peer {
	return chord.Peer{ID: chord.HashID([]byte(id)), Name: id.String()}
}

// New starts the ring binding: it registers the stream handler, follows
// membership, and joins the ring through any live member (creating a ring
// when it has no bootstrap peers and no one else is around).
func New(ov *overlay.Overlay, priv crypto.PrivKey, store *record.Store, haveBootstrap bool, cfg Config) *DHT {
	if cfg.R <= 0 {
		cfg.R = 8
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := ov.Host()
	d := &DHT{
		ov: ov, h: h, priv: priv, store: store, log: cfg.Log.With("layer", "dht"), r: cfg.R,
		self:     PeerOf(h.ID()),
		in:       make(chan func(), 256),
		wait:     make(map[uint64]chan *chord.LookupResult),
		badPeers: make(map[peer.ID]bool),
	}
	d.core = chord.New(chord.Config{
		Self: d.self, R: cfg.R,
		StabilizeTicks: 5, RPCTimeoutTicks: 30, LookupTimeoutTicks: 100, FailLimit: 2,
		FingerRoundTicks: 100,
	})
	d.ctx, d.cancel = context.WithCancel(context.Background())
	foundAt := time.Now()
	if !haveBootstrap {
		if n, err := store.Len(); err == nil && n > 0 {
			// Restarted: the ring may still list this peer, and a ring of
			// one would answer for every key and hand its neighbours a
			// successor list of one. Join through a member first.
			foundAt = foundAt.Add(foundWait)
			d.log.Info("records kept from an earlier run: joining the ring through a member before starting one", "records", n, "wait", foundWait.String())
		} else {
			// A first peer started without bootstrap peers founds a ring
			// at once; rings founded apart merge once membership connects
			// them.
			d.log.Info("starting a new ring")
			d.core.Create()
		}
	}
	h.SetStreamHandler(Protocol, d.handleStream)
	events, unsub := ov.Members().Subscribe()
	d.wg.Add(3)
	go func() {
		defer d.wg.Done()
		d.loop(haveBootstrap, foundAt)
	}()
	go func() {
		defer d.wg.Done()
		d.renewLoop()
	}()
	go func() {
		defer d.wg.Done()
		defer unsub()
		d.followMembers(events)
	}()
	return d
}

// Self is this peer's place on the ring.
func (d *DHT) Self() chord.Peer { return d.self }

// do runs f on the loop goroutine and waits for it.
func (d *DHT) do(f func()) error {
	done := make(chan struct{})
	select {
	case d.in <- func() { f(); close(done) }:
	case <-d.ctx.Done():
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-d.ctx.Done():
		return ErrClosed
	}
}

func (d *DHT) loop(haveBootstrap bool, foundAt time.Time) {
	tick := time.NewTicker(TickInterval)
	defer tick.Stop()
	maintain := time.NewTicker(maintainEvery)
	defer maintain.Stop()
	nextJoin := time.Now()
	for {
		select {
		case <-d.ctx.Done():
			return
		case f := <-d.in:
			f()
		case <-tick.C:
			d.core.Tick()
			if !d.core.Joined() && !d.core.Joining() && time.Now().After(nextJoin) {
				nextJoin = time.Now().Add(joinRetryEvery)
				d.tryJoin(!haveBootstrap && time.Now().After(foundAt))
			}
		case <-maintain.C:
			if d.core.Joined() {
				if via, ok := d.randomMember(); ok {
					d.core.Merge(PeerOf(via))
				}
				d.maintain()
			}
		}
		d.flush()
	}
}

// tryJoin joins through a random live member. A peer that may found (it
// has no bootstrap peers, and its wait is over without a join) starts a
// ring of its own instead: it knows no member, or joining through them
// has not worked (they are all restarting together, say).
func (d *DHT) tryJoin(mayFound bool) {
	if mayFound {
		d.log.Info("starting a new ring")
		d.core.Create()
		return
	}
	via, ok := d.joinMember()
	if !ok {
		// A restarted peer without bootstrap peers may hear from the ring
		// (its old neighbours still list it) before membership names
		// anyone.
		d.mu.Lock()
		via, ok = d.asker, d.asker != ""
		d.mu.Unlock()
	}
	if ok {
		d.core.Join(PeerOf(via))
	}
}

// joinMember picks a member to join the ring through: one this peer is
// connected to when there is one (the peer it joined the group through,
// say), else any live member. Right after peers die, membership still
// has them alive for a few seconds, and a join through a dead one costs
// the whole lookup timeout: a peer restarted just after six of twelve
// were killed took 11 s to join.
func (d *DHT) joinMember() (peer.ID, bool) {
	var conn []peer.ID
	for _, m := range d.ov.Members().Members() {
		if !m.Self && m.State == overlay.StateAlive && d.h.Network().Connectedness(m.ID) == network.Connected {
			conn = append(conn, m.ID)
		}
	}
	if len(conn) > 0 {
		return conn[rand.IntN(len(conn))], true
	}
	return d.randomMember()
}

func (d *DHT) randomMember() (peer.ID, bool) {
	var ids []peer.ID
	for _, m := range d.ov.Members().Members() {
		if !m.Self && m.State == overlay.StateAlive {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return "", false
	}
	return ids[rand.IntN(len(ids))], true
}

// followMembers drops a peer from the ring state the moment memberlist
// declares it dead or gone.
func (d *DHT) followMembers(events <-chan overlay.Event) {
	for {
		select {
		case <-d.ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if e.Kind == overlay.EventFailed || e.Kind == overlay.EventLeft {
				p := PeerOf(e.Member.ID)
				_ = d.do(func() { d.core.PeerDead(p) })
			}
		}
	}
}

// flush sends what the core has to say and acts on its events. Loop only.
func (d *DHT) flush() {
	for d.core.HasReady() {
		rd := d.core.Ready()
		for _, m := range rd.Msgs {
			d.sendAsync(m)
		}
		for _, e := range rd.Events {
			switch e.Kind {
			case chord.EventLookup:
				if ch, ok := d.wait[e.Lookup.ID]; ok {
					delete(d.wait, e.Lookup.ID)
					ch <- e.Lookup
				}
			case chord.EventJoined:
				d.log.Info("joined the ring", "successor", d.core.Successor().Name)
			case chord.EventJoinFailed:
				d.log.Debug("join attempt failed", "err", e.Err)
			case chord.EventPredecessor:
				if !e.Peer.IsZero() {
					d.handOver(e.Peer)
				}
			case chord.EventSuccessors:
				d.replicateSoon()
			}
		}
	}
}

// sendAsync carries one core message on its own stream. A request's reply
// comes back into the loop; a failure to reach the peer is reported to the
// core at once.
func (d *DHT) sendAsync(m chord.Message) {
	to, err := peer.Decode(m.To.Name)
	if err != nil {
		return
	}
	go func() {
		reply, err := d.roundTrip(to, &wireMsg{Op: uint8(m.Type), Chord: m}, m.Type.IsRequest())
		if !m.Type.IsRequest() {
			return
		}
		if err != nil || reply.Op != uint8(replyType(m.Type)) {
			_ = d.do(func() { d.core.Unreachable(m.Seq) })
			return
		}
		_ = d.do(func() { d.core.Step(reply.Chord) })
	}()
}

func replyType(t chord.MsgType) chord.MsgType {
	switch t {
	case chord.MsgPing:
		return chord.MsgPong
	case chord.MsgGetState:
		return chord.MsgState
	case chord.MsgFind:
		return chord.MsgFound
	}
	return 0
}

// roundTrip opens a stream to p, writes req and, if wantReply, reads one
// reply. A request whose reply does not come within firstTry is sent once
// more: p is marked suspect first, so the overlay takes the second stream
// through an intermediate at once, and a path that broke under a request
// costs one retry instead of a peer taken for dead. Requests are queries
// and idempotent writes, safe to send twice.
func (d *DHT) roundTrip(p peer.ID, req *wireMsg, wantReply bool) (*wireMsg, error) {
	if !wantReply {
		return d.tryRoundTrip(p, req, false, rpcTimeout)
	}
	reply, err := d.tryRoundTrip(p, req, true, firstTry)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		d.ov.Suspect(p)
		reply, err = d.tryRoundTrip(p, req, true, rpcTimeout-firstTry)
	}
	return reply, err
}

func (d *DHT) tryRoundTrip(p peer.ID, req *wireMsg, wantReply bool, timeout time.Duration) (*wireMsg, error) {
	ctx, cancel := context.WithTimeout(d.ctx, timeout)
	defer cancel()
	s, err := d.ov.OpenStream(ctx, p, Protocol, overlay.ClassLatency)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(timeout))
	if err := writeFrame(s, req); err != nil {
		s.Reset()
		return nil, err
	}
	if !wantReply {
		return nil, s.CloseWrite()
	}
	_ = s.CloseWrite()
	reply, err := readFrame(bufio.NewReader(s))
	if err != nil {
		s.Reset()
		return nil, fmt.Errorf("reply from %s: %w", p, err)
	}
	if reply.Op <= 8 && reply.Chord.From.Name != p.String() {
		return nil, fmt.Errorf("reply from %s claims to come from %s", p, reply.Chord.From.Name)
	}
	return reply, nil
}

// handleStream serves one request. Before it reads the request it
// reserves, from the stream's resource scope, the memory the request will
// take (the read buffer and the frame its length prefix announces) and
// drops the stream if the resource manager refuses.
func (d *DHT) handleStream(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(rpcTimeout))
	remote := s.Conn().RemotePeer()
	br := bufio.NewReader(s)
	n, err := readFrameLen(br)
	if err != nil {
		d.refuse(remote, err)
		s.Reset()
		return
	}
	// The frame's own length, not maxFrame: nearly every request is a
	// Chord RPC of a few hundred bytes, and the resource manager gives one
	// peer 16 MiB for all its streams of a protocol, four maxFrames.
	release, err := p2phost.Reserve(s, br.Size()+n)
	if err != nil {
		d.log.Info("dropped a stream: no memory for its request", "peer", remote, "err", err)
		s.Reset()
		return
	}
	defer release()
	req, err := readFrameBody(br, n)
	if err != nil {
		d.refuse(remote, err)
		s.Reset()
		return
	}
	reply, err := d.serve(remote, req)
	if err != nil {
		d.refuse(remote, err)
		s.Reset()
		return
	}
	if reply != nil {
		if err := writeFrame(s, reply); err != nil {
			s.Reset()
		}
	}
}

// refuse logs a bad message from a peer, once per peer.
func (d *DHT) refuse(p peer.ID, err error) {
	d.mu.Lock()
	seen := d.badPeers[p]
	d.badPeers[p] = true
	d.mu.Unlock()
	if !seen {
		d.log.Warn("refused a message", "peer", p, "err", err)
	}
}

func (d *DHT) serve(remote peer.ID, req *wireMsg) (*wireMsg, error) {
	now := time.Now()
	switch {
	case req.Op >= 1 && req.Op <= 8:
		m := req.Chord
		if m.From.Name != remote.String() {
			return nil, fmt.Errorf("message claims to come from %s", m.From.Name)
		}
		m.To = d.self
		d.mu.Lock()
		d.asker = remote
		d.mu.Unlock()
		var reply chord.Message
		var ok bool
		if err := d.do(func() { reply, ok = d.core.Step(m) }); err != nil {
			return nil, err
		}
		if !ok {
			return nil, nil
		}
		return &wireMsg{Op: uint8(reply.Type), Chord: reply}, nil
	case req.Op == opStore:
		var stored uint64
		var firstErr error
		if err := d.mailLimit(remote, req.Records, now); err != nil {
			return &wireMsg{Op: opAck, Err: err.Error()}, nil
		}
		for _, r := range req.Records {
			ok, err := d.store.Put(r, now)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if ok {
				stored++
			}
		}
		ack := &wireMsg{Op: opAck, Count: stored}
		if firstErr != nil {
			ack.Err = firstErr.Error()
			// A claim of a key someone else holds is a race or a
			// mistake, not a bad message: it is refused, not logged.
			if !errors.Is(firstErr, record.ErrOwned) {
				d.refuse(remote, firstErr)
			}
		}
		return ack, nil
	case req.Op == opFetch:
		out := &wireMsg{Op: opRecords}
		switch req.Kind {
		case record.KindValue:
			r, err := d.store.Lookup(req.Key, now)
			if err == nil {
				out.Records = []*record.Record{r}
			} else if !errors.Is(err, record.ErrNotFound) {
				return nil, err
			}
		case record.KindProvider:
			rs, err := d.store.Providers(req.Key, now)
			if err != nil {
				return nil, err
			}
			if len(rs) > maxBatch {
				rs = rs[:maxBatch]
			}
			out.Records = rs
		case record.KindMail, record.KindMailAck:
			rs, err := d.store.Mailbox(req.Key, req.Kind, now, maxBatch)
			if err != nil {
				return nil, err
			}
			out.Records = rs
		default:
			return nil, fmt.Errorf("fetch of unknown record kind %d", req.Kind)
		}
		return out, nil
	case req.Op == opHave:
		want := &wireMsg{Op: opWant}
		for i, dg := range req.Digests {
			seq, ok, err := d.store.Has(dg.StoreKey)
			if err != nil {
				return nil, err
			}
			if !ok || seq < dg.Seq {
				want.Indices = append(want.Indices, uint64(i))
			}
		}
		return want, nil
	}
	return nil, fmt.Errorf("operation %d is not a request", req.Op)
}

// Close stops the binding. With leave set it first hands every record to
// the successor and tells the neighbours it is leaving.
func (d *DHT) Close(leave bool) {
	if leave {
		var succ chord.Peer
		_ = d.do(func() { succ = d.core.Successor() })
		if !succ.IsZero() && succ != d.self {
			if id, err := peer.Decode(succ.Name); err == nil {
				n, err := d.push(id, d.store.ForEach)
				if err != nil {
					d.log.Warn("hand-over before leaving failed", "to", succ.Name, "err", err)
				} else {
					d.log.Info("handed records over", "to", succ.Name, "records", n)
				}
			}
		}
		_ = d.do(func() {
			d.core.Leave()
			rd := d.core.Ready()
			var wg sync.WaitGroup
			for _, m := range rd.Msgs {
				to, err := peer.Decode(m.To.Name)
				if err != nil {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = d.roundTrip(to, &wireMsg{Op: uint8(m.Type), Chord: m}, false)
				}()
			}
			wg.Wait()
		})
	}
	d.cancel()
	d.h.RemoveStreamHandler(Protocol)
	d.wg.Wait()
}

// Lookup finds successor(key) and its successors.
func (d *DHT) Lookup(ctx context.Context, key chord.ID) (*chord.LookupResult, error) {
	ch := make(chan *chord.LookupResult, 1)
	var joined bool
	if err := d.do(func() {
		joined = d.core.Joined()
		if !joined {
			return
		}
		id := d.core.Lookup(key)
		d.wait[id] = ch
		d.flush()
	}); err != nil {
		return nil, err
	}
	if !joined {
		return nil, ErrNotJoined
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return r, r.Err
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// RingState is a snapshot of this peer's ring pointers.
type RingState struct {
	Self        chord.Peer
	Joined      bool
	Predecessor chord.Peer
	Successors  []chord.Peer
	Fingers     []chord.Peer
}

// Ring returns the current pointers.
func (d *DHT) Ring() RingState {
	var st RingState
	_ = d.do(func() {
		st = RingState{Self: d.self, Joined: d.core.Joined(), Predecessor: d.core.Pred(),
			Successors: d.core.Succs(), Fingers: d.core.Fingers()}
	})
	return st
}

// replicas returns the owner of key and the next R-1 peers, as a lookup
// sees them.
func (d *DHT) replicas(ctx context.Context, key chord.ID) ([]peer.ID, *chord.LookupResult, error) {
	res, err := d.Lookup(ctx, key)
	if err != nil {
		return nil, res, err
	}
	list := res.Succs
	if len(list) < d.r {
		// The answer came from a node whose successor list ends before R
		// peers past the owner: the successor lists of the owner, or of
		// the peers after it, complete the set.
		list = d.extend(ctx, list)
	}
	var out []peer.ID
	for _, p := range list {
		id, err := peer.Decode(p.Name)
		if err != nil || slices.Contains(out, id) {
			continue
		}
		out = append(out, id)
		if len(out) == d.r {
			break
		}
	}
	return out, res, nil
}

// extend completes a short replica set, list, with the successor list of
// its first entry, the owner. An owner killed a moment ago is still named
// by lookups but cannot answer, while the live replicas lie past the end
// of the list: then the other entries are asked, all at once, and the list
// of the first that answers completes the set. When none does, a lookup of
// the key just past the last entry finds the peers after it.
func (d *DHT) extend(ctx context.Context, list []chord.Peer) []chord.Peer {
	if len(list) == 0 {
		return list
	}
	complete := func(i int, succs []chord.Peer) []chord.Peer {
		return append(slices.Clone(list[:i+1]), succs...)
	}
	if succs, ok := d.successorsOf(list[0]); ok {
		return complete(0, succs)
	}
	answers := make([][]chord.Peer, len(list))
	var wg sync.WaitGroup
	for i := 1; i < len(list); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if succs, ok := d.successorsOf(list[i]); ok {
				answers[i] = succs
			}
		}()
	}
	wg.Wait()
	for i, succs := range answers {
		if succs != nil {
			return complete(i, succs)
		}
	}
	last := list[len(list)-1]
	res, err := d.Lookup(ctx, last.ID.Add(chord.PowerOfTwo(0)))
	if err != nil {
		return list
	}
	return append(slices.Clone(list), res.Succs...)
}

// successorsOf returns p's successor list (this peer's own, for itself);
// ok is false when p does not answer or answers that it is in no ring.
func (d *DHT) successorsOf(p chord.Peer) ([]chord.Peer, bool) {
	if p == d.self {
		var succs []chord.Peer
		var joined bool
		_ = d.do(func() { succs, joined = d.core.Succs(), d.core.Joined() })
		return succs, joined && len(succs) > 0
	}
	id, err := peer.Decode(p.Name)
	if err != nil {
		return nil, false
	}
	reply, err := d.roundTrip(id, &wireMsg{Op: uint8(chord.MsgGetState), Chord: chord.Message{Type: chord.MsgGetState, From: d.self}}, true)
	if err != nil || reply.Op != uint8(chord.MsgState) || len(reply.Chord.Nodes) == 0 {
		return nil, false
	}
	return reply.Chord.Nodes, true
}

// storeAt puts rec on every replica of its key and returns how many took it.
func (d *DHT) storeAt(ctx context.Context, rec *record.Record) (int, error) {
	if err := rec.Verify(time.Now()); err != nil {
		return 0, err
	}
	peers, _, err := d.replicas(ctx, rec.ChordID())
	if err != nil {
		return 0, err
	}
	return d.storeOnReplicas(rec, peers)
}

// storeOnReplicas puts rec on peers, its replicas, and returns how many
// took it.
func (d *DHT) storeOnReplicas(rec *record.Record, peers []peer.ID) (int, error) {
	held, lastErr, owned := d.storeEach(rec, peers)
	if owned != nil {
		// Replicas apply one rule, so the claim that one refused wins
		// on the others too once they hear of it.
		return len(held), owned
	}
	if len(held) == 0 {
		return 0, fmt.Errorf("no replica took the record: %w", lastErr)
	}
	return len(held), nil
}

// storeEach puts rec on peers at once and returns those that took it,
// the last refusal, and a refusal because another owner holds the key.
func (d *DHT) storeEach(rec *record.Record, peers []peer.ID) (held []peer.ID, lastErr, owned error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := d.storeOn(p, []*record.Record{rec})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lastErr = err
				if errors.Is(err, record.ErrOwned) {
					owned = err
				}
				return
			}
			held = append(held, p)
		}()
	}
	wg.Wait()
	return held, lastErr, owned
}

// storeOn sends records to p (itself included, locally).
func (d *DHT) storeOn(p peer.ID, recs []*record.Record) error {
	if p == d.h.ID() {
		for _, r := range recs {
			if _, err := d.store.Put(r, time.Now()); err != nil {
				return err
			}
		}
		return nil
	}
	reply, err := d.roundTrip(p, &wireMsg{Op: opStore, Records: recs}, true)
	if err != nil {
		return err
	}
	if reply.Op != opAck {
		return fmt.Errorf("%s answered a store with operation %d", p, reply.Op)
	}
	if reply.Err != "" {
		if strings.Contains(reply.Err, record.ErrOwned.Error()) {
			return fmt.Errorf("%s refused: %s: %w", p, reply.Err, record.ErrOwned)
		}
		return fmt.Errorf("%s refused: %s", p, reply.Err)
	}
	return nil
}

// Put claims key for this peer with value, or updates its claim, for ttl
// (DefaultTTL when zero), on the key's R replicas, and returns how many
// stored it. A key another peer holds is refused with an error wrapping
// record.ErrOwned that names the owner. The claim is not renewed: see
// Claim.
func (d *DHT) Put(ctx context.Context, key, value []byte, ttl time.Duration) (int, error) {
	rec, peers, err := d.claimRecord(ctx, key, value, ttl)
	if err != nil {
		return 0, err
	}
	return d.storeOnReplicas(rec, peers)
}

// claimRecord signs the next record of this peer's claim of key: the
// first claim, or an update that keeps the first claim's time. It also
// returns the key's replicas, found by the read, for the write.
func (d *DHT) claimRecord(ctx context.Context, key, value []byte, ttl time.Duration) (*record.Record, []peer.ID, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	cur, peers, err := d.readRecord(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, nil, err
	}
	now := time.Now()
	seq, claimed := uint64(now.UnixNano()), now
	if cur != nil {
		mine := d.mine(cur)
		if !mine && !cur.Released {
			_, why := record.Replaces(&record.Record{Kind: record.KindValue, Key: key}, cur, now)
			return nil, nil, why
		}
		seq = max(seq, cur.Seq+1)
		if mine && !cur.Released && cur.Claimed > 0 {
			claimed = time.Unix(0, cur.Claimed)
		}
	}
	rec, err := record.NewClaim(key, value, seq, claimed, now.Add(ttl), d.priv)
	return rec, peers, err
}

// mine says whether r was signed by this peer.
func (d *DHT) mine(r *record.Record) bool {
	p, err := r.Publisher()
	return err == nil && p == d.h.ID()
}

// Get returns the record of key, ErrNotFound when there is none or its
// owner released it. See GetRecord.
func (d *DHT) Get(ctx context.Context, key []byte) (*record.Record, *chord.LookupResult, error) {
	r, res, err := d.GetRecord(ctx, key)
	if err == nil && r.Released {
		return nil, res, ErrNotFound
	}
	return r, res, err
}

// GetRecord returns the winning record of key, a release included: it asks
// every replica at once and keeps the record that replaces the others
// (record.Replaces), so a replica that missed a newer write (the owner of
// one half of a healed partition, say) cannot hide it; the replicas that
// answered with another record or none are sent the winner.
func (d *DHT) GetRecord(ctx context.Context, key []byte) (*record.Record, *chord.LookupResult, error) {
	peers, res, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, res, err
	}
	r, err := d.readFrom(key, peers)
	return r, res, err
}

// readRecord is GetRecord that also returns the replicas it asked (with
// ErrNotFound too), so that a write after it needs no second lookup.
func (d *DHT) readRecord(ctx context.Context, key []byte) (*record.Record, []peer.ID, error) {
	peers, _, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, nil, err
	}
	r, err := d.readFrom(key, peers)
	return r, peers, err
}

// readFrom asks peers, key's replicas, at once and returns the record
// that replaces the others, sending it to those that answered otherwise.
func (d *DHT) readFrom(key []byte, peers []peer.ID) (*record.Record, error) {
	type answer struct {
		p   peer.ID
		rec *record.Record
		ok  bool
	}
	var answers []answer
	for _, f := range d.fetchAll(peers, record.KindValue, key) {
		a := answer{p: f.p, ok: f.err == nil}
		if a.ok {
			a.rec = pick(f.recs, key, nil)
		}
		answers = append(answers, a)
	}
	var best *record.Record
	for _, a := range answers {
		if a.rec != nil {
			best = pick([]*record.Record{a.rec}, key, best)
		}
	}
	if best == nil {
		return nil, ErrNotFound
	}
	for _, a := range answers {
		if a.ok && (a.rec == nil || !bytes.Equal(a.rec.Sig, best.Sig)) {
			go func() { _ = d.storeOn(a.p, []*record.Record{best}) }()
		}
	}
	return best, nil
}

// pick folds the valid records of key in recs into best by the
// replacement rule.
func pick(recs []*record.Record, key []byte, best *record.Record) *record.Record {
	now := time.Now()
	for _, r := range recs {
		if string(r.Key) != string(key) || r.Verify(now) != nil {
			continue
		}
		if best == nil {
			best = r
		} else if ok, _ := record.Replaces(r, best, now); ok {
			best = r
		}
	}
	return best
}

// fetched is one replica's answer to a fetch.
type fetched struct {
	p    peer.ID
	recs []*record.Record
	err  error
}

// fetchAll fetches the records of kind for key from every peer at once.
func (d *DHT) fetchAll(peers []peer.ID, kind record.Kind, key []byte) []fetched {
	out := make([]fetched, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs, err := d.fetch(p, kind, key)
			out[i] = fetched{p, recs, err}
		}()
	}
	wg.Wait()
	return out
}

func (d *DHT) fetch(p peer.ID, kind record.Kind, key []byte) ([]*record.Record, error) {
	if p == d.h.ID() {
		now := time.Now()
		switch kind {
		case record.KindProvider:
			return d.store.Providers(key, now)
		case record.KindMail, record.KindMailAck:
			return d.store.Mailbox(key, kind, now, maxBatch)
		}
		r, err := d.store.Lookup(key, now)
		if errors.Is(err, record.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return []*record.Record{r}, nil
	}
	reply, err := d.roundTrip(p, &wireMsg{Op: opFetch, Kind: kind, Key: key}, true)
	if err != nil {
		return nil, err
	}
	if reply.Op != opRecords {
		return nil, fmt.Errorf("%s answered a fetch with operation %d", p, reply.Op)
	}
	return reply.Records, nil
}

// AddProvider announces that this peer provides key (an infohash, say):
// a signed provider record on the key's replicas, valid for ttl.
func (d *DHT) AddProvider(ctx context.Context, key []byte, ttl time.Duration) (int, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	now := time.Now()
	rec, err := record.New(record.KindProvider, key, nil, uint64(now.UnixNano()), now.Add(ttl), d.priv)
	if err != nil {
		return 0, err
	}
	return d.storeAt(ctx, rec)
}

// FindProviders returns the peers that announced key, from every replica
// that answers.
func (d *DHT) FindProviders(ctx context.Context, key []byte) ([]peer.ID, error) {
	peers, _, err := d.replicas(ctx, chord.HashID(key))
	if err != nil {
		return nil, err
	}
	var out []peer.ID
	for _, p := range peers {
		recs, err := d.fetch(p, record.KindProvider, key)
		if err != nil {
			continue
		}
		for _, r := range recs {
			if r.Verify(time.Now()) != nil || string(r.Key) != string(key) {
				continue
			}
			if id, err := r.Publisher(); err == nil && !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
	}
	return out, nil
}

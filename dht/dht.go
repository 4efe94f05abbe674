package dht

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	// ObserveLookup, when set, is told of each lookup's time and result
	// (for metrics). It must not block.
	ObserveLookup func(time.Duration, error)
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

	observe func(time.Duration, error)

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
		ov: ov, h: h, priv: priv, store: store, log: cfg.Log.With("layer", "dht"), r: cfg.R, observe: cfg.ObserveLookup,
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
func (d *DHT) Lookup(ctx context.Context, key chord.ID) (r *chord.LookupResult, err error) {
	if obs := d.observe; obs != nil {
		start := time.Now()
		defer func() { obs(time.Since(start), err) }()
	}
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

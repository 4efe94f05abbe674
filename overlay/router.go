package overlay

import (
	"bufio"
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/overlay/onehop/client"
	"github.com/peer-overlay/peer/overlay/onehop/server"
	"github.com/peer-overlay/peer/overlay/ron"
)

// RouterConfig tunes the RON router. Zero fields take defaults.
type RouterConfig struct {
	GroupCap          int        // members probed at most (64)
	MaxForward        int        // streams this peer forwards at once, as an intermediate (server.DefaultMaxForward)
	MaxForwardPerPeer int        // of them for one source (server.DefaultMaxForwardPerPeer)
	Core              ron.Config // probe timing and budget
	Log               *slog.Logger
}

// wireOverhead is what one message costs beyond its payload on a libp2p
// stream over TCP: a yamux header (12), a Noise length and tag (18) and
// TCP/IPv4 headers with timestamps (52), each message being sent alone.
const wireOverhead = 12 + 18 + 52

// Router probes the members of the group, spreads this peer's signed row of
// link measurements to them, and keeps theirs, so that path choice can use
// any one-hop path. Probes and rows travel on one stream per member, opened
// by the prober; the member answers probes on the same stream.
type Router struct {
	h       host.Host
	members *Membership
	cfg     RouterConfig
	log     *slog.Logger
	start   time.Time

	mu     sync.Mutex
	core   *ron.Core
	outs   map[peer.ID]*ronStream // streams we opened, by member
	hashes map[ron.PeerHash]peer.ID
	// raw is the last verified row of each peer, as received, so that it
	// can be read again when the group changes: a row's entries name
	// members by hash, and those not yet known are left out.
	raw map[peer.ID]rawRow
	// heard is when a message last came from each member; checking and
	// checkedAt pace the stuck-connection checks (stuck.go).
	heard       map[peer.ID]time.Time
	checking    map[peer.ID]bool
	checkedAt   map[peer.ID]time.Time
	stuckClosed map[peer.ID]stuckClose
	// lagged is when the loop's tick last came selfLagLimit late, and lag
	// by how much (stuck.go); starvedLogged paces the log line.
	lagged, starvedLogged time.Time
	lag                   time.Duration

	sent atomic.Int64 // bytes on the wire, estimated (payload and framing)

	fwd   *client.Client // opens forwarded streams, accepts them as the destination
	relay *server.Server // forwards streams as the intermediate

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// readBufSize is the read buffer of a probe stream.
const readBufSize = 4096

// advanceEveryMs is how often the routes' hysteresis takes a step.
const advanceEveryMs = 100

// rawRowKeepMs is how long a received row is kept for re-reading.
const rawRowKeepMs = 5 * 60 * 1000

type rawRow struct {
	row *ron.SignedRow
	at  int64
}

type ronStream struct {
	st  network.Stream
	out chan []byte
}

// NewRouter starts probing the group of members.
func NewRouter(h host.Host, members *Membership, cfg RouterConfig) *Router {
	if cfg.GroupCap <= 0 {
		cfg.GroupCap = 64
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Core.Rand == nil {
		cfg.Core.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Router{
		h: h, members: members, cfg: cfg, log: cfg.Log.With("layer", "ron"), start: time.Now(),
		core: ron.New(string(h.ID()), cfg.Core), outs: map[peer.ID]*ronStream{}, hashes: map[ron.PeerHash]peer.ID{}, raw: map[peer.ID]rawRow{},
		heard: map[peer.ID]time.Time{}, checking: map[peer.ID]bool{}, checkedAt: map[peer.ID]time.Time{}, stuckClosed: map[peer.ID]stuckClose{},
		ctx: ctx, cancel: cancel,
	}
	r.fwd = client.New(h, r.acceptForwarded, r.log)
	r.relay = server.New(h, server.Config{MaxForward: cfg.MaxForward, MaxForwardPerPeer: cfg.MaxForwardPerPeer,
		Allow: r.allowForward, Log: r.log})
	// Row numbers start from the wall clock in microseconds, so that they
	// only grow across restarts: the others keep the highest number they
	// saw and would refuse a restarted peer's rows until its count passed
	// the old run's. A row a second for a year is 3·10^7, far below the
	// 10^6 numbers a second of downtime adds.
	r.core.RowSeq(uint64(time.Now().UnixMicro()))
	h.SetStreamHandler(ron.Protocol, r.handle)
	r.wg.Add(1)
	go r.loop()
	return r
}

// Close stops probing.
func (r *Router) Close() {
	r.h.RemoveStreamHandler(ron.Protocol)
	r.fwd.Close()
	r.relay.Close()
	r.cancel()
	r.mu.Lock()
	for _, s := range r.outs {
		if s.st != nil {
			s.st.Reset()
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *Router) now() int64 { return time.Since(r.start).Milliseconds() }

// group is the members probed: every alive member but self, the first
// GroupCap by peer ID, so that members agree on who is in the group.
func (r *Router) group() []string {
	var out []string
	for _, m := range r.members.Members() {
		if m.Self || m.State != StateAlive {
			continue
		}
		out = append(out, string(m.ID))
		if len(out) == r.cfg.GroupCap {
			break
		}
	}
	return out
}

func (r *Router) loop() {
	defer r.wg.Done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var lastGroup time.Time
	var lastAdvance int64
	lastTick := time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		if t := time.Now(); t.Sub(lastTick) > selfLagLimit {
			r.mu.Lock()
			r.lagged, r.lag = t, t.Sub(lastTick)
			r.mu.Unlock()
		}
		lastTick = time.Now()
		now := r.now()
		if time.Since(lastGroup) > 250*time.Millisecond {
			lastGroup = time.Now()
			g := r.group()
			r.mu.Lock()
			r.core.SetMembers(now, g)
			grew := false
			hashes := make(map[ron.PeerHash]peer.ID, len(g))
			for _, m := range g {
				h := ron.HashPeer(peer.ID(m))
				hashes[h] = peer.ID(m)
				if _, ok := r.hashes[h]; !ok {
					grew = true
				}
			}
			r.hashes = hashes
			for p, rr := range r.raw {
				if now-rr.at > rawRowKeepMs {
					delete(r.raw, p) // a member refreshes its row far sooner
				}
			}
			if grew {
				for p, rr := range r.raw {
					r.core.ReapplyRow(rr.at, r.resolve(p, rr.row))
				}
			}
			for p, s := range r.outs {
				if !r.isMember(p) && s.st != nil {
					s.st.Reset() // its runStream drops it
				}
			}
			for p := range r.heard {
				if !r.isMember(p) {
					delete(r.heard, p)
					delete(r.checkedAt, p)
				}
			}
			for p := range r.stuckClosed {
				if !r.isMember(p) {
					delete(r.stuckClosed, p)
				}
			}
			r.mu.Unlock()
			r.checkStuck(now)
		}
		r.mu.Lock()
		probes := r.core.Tick(now)
		row, send := r.core.OwnRow(now)
		if now-lastAdvance >= advanceEveryMs {
			// The routes' hysteresis moves here, on the tick, and only
			// here: asking for routes (peer routes, OpenStream) reads.
			r.core.Advance(now)
			lastAdvance = now
		}
		r.mu.Unlock()
		for _, p := range probes {
			r.send(now, peer.ID(p.To), &ron.Message{Type: ron.MsgProbe, Seq: p.Seq}, p.Seq)
		}
		if send {
			r.spreadRow(now, row)
		}
	}
}

// member reports whether p is in the group this peer probes.
func (r *Router) member(p peer.ID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.isMember(p)
}

// groupSize is the number of members probed.
func (r *Router) groupSize() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.hashes)
}

// known reports whether p is an alive member of the membership, in the
// group or beyond its cap.
func (r *Router) known(p peer.ID) bool {
	for _, m := range r.members.Members() {
		if m.ID == p {
			return m.State == StateAlive
		}
	}
	return false
}

func (r *Router) isMember(p peer.ID) bool {
	_, ok := r.hashes[ron.HashPeer(p)]
	return ok
}

// spreadRow signs this peer's row and sends it to every member.
func (r *Router) spreadRow(now int64, row ron.Row) {
	sr := &ron.SignedRow{Owner: r.h.ID(), Seq: row.Seq}
	for m, l := range row.Links {
		sr.Entries = append(sr.Entries, ron.Entry{To: ron.HashPeer(peer.ID(m)), Link: l})
	}
	key := r.h.Peerstore().PrivKey(r.h.ID())
	if key == nil {
		r.log.Warn("no private key to sign the link-state row")
		return
	}
	if err := sr.Sign(key); err != nil {
		r.log.Warn("sign the link-state row", "err", err)
		return
	}
	msg := &ron.Message{Type: ron.MsgRow, Row: sr}
	r.mu.Lock()
	members := r.core.Members()
	r.mu.Unlock()
	for _, m := range members {
		r.send(now, peer.ID(m), msg, 0)
	}
}

// send queues m on the stream to p, opening it when needed. A probe that
// cannot be sent counts as lost at once.
func (r *Router) send(now int64, p peer.ID, m *ron.Message, probeSeq uint64) {
	b, err := m.Encode()
	if err != nil {
		r.log.Warn("encode", "err", err)
		return
	}
	r.mu.Lock()
	s := r.outs[p]
	if s == nil {
		s = &ronStream{out: make(chan []byte, 64)}
		r.outs[p] = s
		r.wg.Add(1)
		go r.runStream(p, s)
	}
	r.mu.Unlock()
	select {
	case s.out <- b:
	default:
		// The stream is stuck (a cut link fills no buffer this fast,
		// but a dead one may): the probe is lost.
		if probeSeq != 0 {
			r.mu.Lock()
			r.core.ProbeFailed(now, string(p), probeSeq)
			r.mu.Unlock()
		}
	}
}

// runStream opens the stream to p, writes what is queued, and reads the
// answers; when the stream fails it is dropped and the next send opens a
// new one.
func (r *Router) runStream(p peer.ID, s *ronStream) {
	defer r.wg.Done()
	defer func() {
		r.mu.Lock()
		if r.outs[p] == s {
			delete(r.outs, p)
		}
		r.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Second)
	st, err := r.h.NewStream(network.WithNoDial(ctx, "ron probes use the existing connection"), p, ron.Protocol)
	if err != nil {
		st, err = r.h.NewStream(ctx, p, ron.Protocol)
	}
	cancel()
	if err != nil {
		r.log.Debug("open probe stream", "peer", p, "err", err)
		return
	}
	r.mu.Lock()
	s.st = st
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.read(p, st, false)
	}()
	defer st.Reset()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-done:
			return
		case b := <-s.out:
			_ = st.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := st.Write(b); err != nil {
				return
			}
			r.sent.Add(int64(len(b) + wireOverhead))
		}
	}
}

// handle serves a member's stream: answers its probes, keeps its rows.
func (r *Router) handle(st network.Stream) {
	defer st.Reset()
	free, err := p2phost.Reserve(st, readBufSize+ron.MaxBody)
	if err != nil {
		r.log.Info("refused a probe stream", "err", err)
		return
	}
	defer free()
	r.read(st.Conn().RemotePeer(), st, true)
}

// read consumes messages from p on st until it fails. On an inbound stream
// (answer true) probes are answered on the same stream.
func (r *Router) read(p peer.ID, st network.Stream, answer bool) {
	br := bufio.NewReaderSize(st, readBufSize)
	var wmu sync.Mutex
	for {
		m, err := ron.ReadMessage(br)
		if err != nil {
			return
		}
		now := r.now()
		r.mu.Lock()
		r.heardLocked(p)
		r.mu.Unlock()
		switch m.Type {
		case ron.MsgProbe:
			if !answer {
				continue
			}
			b, _ := (&ron.Message{Type: ron.MsgAnswer, Seq: m.Seq}).Encode()
			wmu.Lock()
			_ = st.SetWriteDeadline(time.Now().Add(time.Second))
			_, err := st.Write(b)
			wmu.Unlock()
			if err != nil {
				return
			}
			r.sent.Add(int64(len(b) + wireOverhead))
		case ron.MsgAnswer:
			r.mu.Lock()
			r.core.ProbeAnswered(now, string(p), m.Seq)
			r.mu.Unlock()
		case ron.MsgRow:
			// Only a member's own row, signed by its key, counts.
			if m.Row.Owner != p {
				r.log.Info("refused a row relayed for another peer", "from", p, "owner", m.Row.Owner)
				continue
			}
			if err := m.Row.Verify(); err != nil {
				r.log.Info("refused a row", "from", p, "err", err)
				continue
			}
			r.mu.Lock()
			// Kept even when the owner is not in the group yet: it may
			// be by the next refresh, and its row then counts at once.
			if old, ok := r.raw[p]; !ok || old.row.Seq < m.Row.Seq {
				r.raw[p] = rawRow{row: m.Row, at: now}
			}
			r.core.ApplyRow(now, r.resolve(p, m.Row))
			r.mu.Unlock()
		}
	}
}

// resolve names a row's entries by the members they hash to. Entries for
// peers not (yet) in the group are left out. Call with mu held.
func (r *Router) resolve(p peer.ID, sr *ron.SignedRow) ron.Row {
	row := ron.Row{Owner: string(p), Seq: sr.Seq, Links: map[string]ron.LinkState{}}
	for _, e := range sr.Entries {
		if id, ok := r.hashes[e.To]; ok {
			row.Links[string(id)] = e.Link
		}
	}
	return row
}

// RouteInfo is what `peer routes` shows for one member.
type RouteInfo struct {
	Peer   peer.ID       `json:"peer"`
	Direct ron.LinkState `json:"direct"`
	Best   BestPaths     `json:"best"`
	Paths  int           `json:"one_hop_paths"` // usable one-hop paths known
}

// BestPaths is the path chosen per metric.
type BestPaths struct {
	Latency    PathInfo `json:"latency"`
	Loss       PathInfo `json:"loss"`
	Throughput PathInfo `json:"throughput"`
}

// PathInfo is a chosen path: direct, or through the member Via.
type PathInfo struct {
	Via   peer.ID `json:"via,omitempty"`
	RTTms float64 `json:"rtt_ms"`
	Loss  float64 `json:"loss"`
	Tput  float64 `json:"throughput_bytes_per_s"`
	OK    bool    `json:"ok"`
}

func pathInfo(p ron.Path) PathInfo {
	return PathInfo{Via: peer.ID(p.Via), RTTms: p.RTTms, Loss: p.Loss, Tput: p.Tput, OK: p.OK}
}

// Routes lists every member with its direct link and the chosen paths.
func (r *Router) Routes() []RouteInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []RouteInfo
	for _, m := range r.core.Members() {
		ri := RouteInfo{Peer: peer.ID(m), Direct: r.core.Link(now, m)}
		ri.Best.Latency = pathInfo(r.core.Route(now, m, ron.Latency))
		ri.Best.Loss = pathInfo(r.core.Route(now, m, ron.Loss))
		ri.Best.Throughput = pathInfo(r.core.Route(now, m, ron.Throughput))
		ri.Paths = len(r.core.Candidates(now, m)) - 1
		out = append(out, ri)
	}
	return out
}

// Route is the path to use to p for class c.
func (r *Router) Route(p peer.ID, c Class) PathInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return pathInfo(r.core.Route(r.now(), string(p), classMetric(c)))
}

// Suspect tells the router that real traffic to p is failing: p is probed
// at once.
func (r *Router) Suspect(p peer.ID) {
	r.mu.Lock()
	r.core.Suspect(r.now(), string(p))
	r.mu.Unlock()
}

// Overhead is the probe and row traffic this peer has sent, in bytes on
// the wire (estimated: payload plus per-message framing), and for how long.
func (r *Router) Overhead() (bytes int64, since time.Duration) {
	return r.sent.Load(), time.Since(r.start)
}

func classMetric(c Class) ron.Metric {
	switch c {
	case ClassLatency:
		return ron.Latency
	case ClassThroughput:
		return ron.Throughput
	}
	return ron.Loss
}

// Relays lists up to n intermediates to try towards p for class c when its
// direct path fails: measured one-hop paths first, then (SOSR) members
// whose links are up, nearest first.
func (r *Router) Relays(p peer.ID, c Class, n int) []peer.ID {
	r.mu.Lock()
	ms := r.core.Relays(r.now(), string(p), n, classMetric(c))
	r.mu.Unlock()
	out := make([]peer.ID, len(ms))
	for i, m := range ms {
		out[i] = peer.ID(m)
	}
	return out
}

// directDown says whether p is a member whose direct link path choice
// judges down, with no measured way round it: the direct path is then
// tried last, after intermediaries.
func (r *Router) directDown(p peer.ID, c Class) bool {
	return !r.Route(p, c).OK && r.member(p)
}

// Matrix is the group's link table as this peer knows it: the reporting
// peer, then the peer at the other end of each link (see ron.Core.Matrix).
func (r *Router) Matrix() map[peer.ID]map[peer.ID]ron.LinkState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[peer.ID]map[peer.ID]ron.LinkState{}
	for owner, links := range r.core.Matrix(r.now()) {
		row := make(map[peer.ID]ron.LinkState, len(links))
		for k, v := range links {
			row[peer.ID(k)] = v
		}
		out[peer.ID(owner)] = row
	}
	// The core keeps no entries naming this peer (no path ends here), so
	// those are read from the rows as received.
	self := r.h.ID()
	me := ron.HashPeer(self)
	for p, rr := range r.raw {
		row, ok := out[p]
		if !ok || p == self {
			continue
		}
		for _, e := range rr.row.Entries {
			if e.To == me {
				row[self] = e.Link
			}
		}
	}
	return out
}

// RouteChanges counts the times a chosen route moved to another path.
func (r *Router) RouteChanges() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.core.RouteChanges()
}

package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// State is a member's state as this peer sees it.
type State string

// Member states. Alive members are in the group; dead and left ones are
// remembered so that a caller can tell a failure from a stranger.
//
// StateSuspect is part of the contract but not yet reported: memberlist
// v0.7.0 keeps suspicion to itself (the Node.State it hands out is never
// set), so a suspected peer shows as alive until it is declared dead.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one peer of the group.
type Member struct {
	ID    peer.ID
	Addrs []ma.Multiaddr // listen addresses it advertises
	State State
	Since time.Time // when State last changed, by this peer's clock
	Self  bool
	// Fields are the tagged metadata fields it advertises besides its
	// addresses (see MetaTagReach), as last heard.
	Fields []MetaField
}

// Field returns the value of the member's field with tag, if it has one.
func (m Member) Field(tag uint64) ([]byte, bool) {
	return nodeMeta{fields: m.Fields}.field(tag)
}

// EventKind says what happened to a member.
type EventKind int

// Event kinds. EventLeft is a graceful leave; EventFailed is a failure
// declared by the failure detector.
const (
	EventJoined EventKind = iota + 1
	EventUpdated
	EventLeft
	EventFailed
)

func (k EventKind) String() string {
	switch k {
	case EventJoined:
		return "joined"
	case EventUpdated:
		return "updated"
	case EventLeft:
		return "left"
	case EventFailed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a membership change, delivered in order to every subscriber.
type Event struct {
	Kind   EventKind
	Member Member
}

// MembershipConfig configures the failure detector.
type MembershipConfig struct {
	// Profile is "lan" (probe every second, fail within seconds) or "wan"
	// (memberlist's WAN timing, tolerant of long round trips). Empty means
	// "lan".
	Profile string
	// Log receives memberlist's messages and ours. Nil discards them.
	Log *slog.Logger
	// Fields, if set, gives the tagged fields this peer advertises
	// besides its addresses, read each time the metadata is gossiped
	// (call UpdateMeta when they change). Those that do not fit in
	// memberlist's 512 bytes after the addresses are left out.
	Fields func() []MetaField
	// Addrs, if set, gives the addresses to advertise instead of the
	// host's own (for example with a STUN-mapped address added).
	Addrs func() []ma.Multiaddr
	// Keys, if any, close the group: memberlist encrypts and
	// authenticates every packet and stream with the first (the primary)
	// and accepts any of them, and refuses whatever is not sealed with one
	// of them. Each is a 32-byte AES key. No keys: an open group.
	Keys [][]byte

	// tune adjusts memberlist's settings last; tests use it for fast timing.
	tune func(*memberlist.Config)
}

// ErrNoBootstrapJoined is returned by Join when no bootstrap peer could be
// reached; it wraps each peer's own error.
var ErrNoBootstrapJoined = errors.New("no bootstrap peer answered")

// Membership is the group of peers this peer knows, kept by memberlist's
// SWIM failure detector (with Lifeguard) running over the libp2p host.
type Membership struct {
	host host.Host
	cfg  MembershipConfig
	log  *slog.Logger
	tr   *Transport
	ml   *memberlist.Memberlist
	kr   *memberlist.Keyring // nil in an open group

	mu       sync.Mutex
	leaving  bool // advertised in our metadata once Leave starts
	members  map[peer.ID]*Member
	subs     map[*subscriber]struct{}
	settling bool // a settle loop runs
	stop     chan struct{}
	wg       sync.WaitGroup
}

// settleSchedule is when, after a join, this peer syncs its full state with
// a random member again. memberlist spreads a join by gossip, which can miss
// a peer (more so on a busy machine, where packets are lost); its periodic
// push/pull repairs that, but only every 30 s, scaled up to 60 s for groups
// over 32. When many peers join at once, these early syncs let each learn
// the ones that joined just after it within seconds.
var settleSchedule = []time.Duration{
	time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
}

// NewMembership starts memberlist on h. The group holds only this peer
// until Join.
func NewMembership(h host.Host, cfg MembershipConfig) (*Membership, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var mlc *memberlist.Config
	switch cfg.Profile {
	case "", "lan":
		mlc = memberlist.DefaultLANConfig()
	case "wan":
		mlc = memberlist.DefaultWANConfig()
	default:
		return nil, fmt.Errorf("membership profile %q: want \"lan\" or \"wan\"", cfg.Profile)
	}
	m := &Membership{
		host:    h,
		cfg:     cfg,
		log:     log,
		members: make(map[peer.ID]*Member),
		subs:    make(map[*subscriber]struct{}),
		stop:    make(chan struct{}),
	}
	m.tr = NewTransport(h, log)
	mlc.Name = h.ID().String()
	mlc.Transport = m.tr
	mlc.RequireNodeNames = true
	mlc.Events = (*eventDelegate)(m)
	mlc.Delegate = (*metaDelegate)(m)
	mlc.Logger = newMemberlistLogger(log)
	// Packets are small and travel inside encrypted streams; compressing
	// them cost a measurable share of an idle peer's CPU for little gain.
	mlc.EnableCompression = false
	// A peer restarted on another port may take its name back once the
	// old incarnation has been dead this long.
	mlc.DeadNodeReclaimTime = 5 * time.Second
	if len(cfg.Keys) > 0 {
		kr, err := newKeyring(cfg.Keys)
		if err != nil {
			_ = m.tr.Shutdown()
			return nil, err
		}
		mlc.Keyring = kr
		m.kr = kr
		mlc.GossipVerifyIncoming = true
		mlc.GossipVerifyOutgoing = true
	}
	if cfg.tune != nil {
		cfg.tune(mlc)
	}
	ml, err := memberlist.Create(mlc)
	if err != nil {
		_ = m.tr.Shutdown()
		return nil, fmt.Errorf("start membership: %w", err)
	}
	m.ml = ml
	m.wg.Add(1)
	go m.reconnectLoop()
	return m, nil
}

// reconnectEvery is how often this peer tries to reach one member it holds
// for dead: memberlist never contacts a dead node again (and forgets it
// after GossipToTheDeadTime), so without this two halves of a healed
// partition, neither of them alone, would stay apart for ever.
const reconnectEvery = 2 * time.Second

// reconnectFor is how long after its death a member is still tried.
const reconnectFor = 24 * time.Hour

func (m *Membership) reconnectLoop() {
	defer m.wg.Done()
	for {
		wait := reconnectEvery/2 + rand.N(reconnectEvery)
		select {
		case <-m.stop:
			return
		case <-time.After(wait):
		}
		m.mu.Lock()
		var dead []peer.AddrInfo
		for _, mem := range m.members {
			if mem.State == StateDead && !mem.Self && len(mem.Addrs) > 0 && time.Since(mem.Since) < reconnectFor {
				dead = append(dead, peer.AddrInfo{ID: mem.ID, Addrs: slices.Clone(mem.Addrs)})
			}
		}
		m.mu.Unlock()
		if len(dead) == 0 {
			continue
		}
		ai := dead[rand.IntN(len(dead))]
		ctx, cancel := context.WithTimeout(context.Background(), reconnectEvery)
		n, err := m.Join(ctx, []peer.AddrInfo{ai})
		cancel()
		if err != nil {
			m.log.Debug("reconnect to a dead member failed", "peer", ai.ID, "err", err)
			continue
		}
		m.log.Info("reconnected to a member held for dead", "peer", ai.ID, "answered", n)
	}
}

// Join contacts each bootstrap peer and merges its view of the group. It
// returns how many peers answered; when none did, the error names each
// address that failed and why.
func (m *Membership) Join(ctx context.Context, peers []peer.AddrInfo) (int, error) {
	var errs []error
	var targets []string
	for _, ai := range peers {
		if ai.ID == m.host.ID() {
			continue
		}
		if err := m.host.Connect(ctx, ai); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", AddrInfoString(ai), err))
			continue
		}
		targets = append(targets, ai.ID.String()+"/"+m.hostPortOf(ai.ID))
	}
	if len(targets) == 0 {
		if len(errs) == 0 {
			return 0, nil
		}
		return 0, fmt.Errorf("%w: %w", ErrNoBootstrapJoined, errors.Join(errs...))
	}
	n, err := m.ml.Join(targets)
	if n == 0 && err != nil {
		errs = append(errs, explainKeyError(err))
		return 0, fmt.Errorf("%w: %w", ErrNoBootstrapJoined, errors.Join(errs...))
	}
	m.startSettling()
	return n, nil
}

// startSettling runs the settle syncs of settleSchedule, once at a time.
func (m *Membership) startSettling() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settling {
		return
	}
	select {
	case <-m.stop:
		return
	default:
	}
	m.settling = true
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer func() {
			m.mu.Lock()
			m.settling = false
			m.mu.Unlock()
		}()
		start := time.Now()
		for _, at := range settleSchedule {
			select {
			case <-m.stop:
				return
			case <-time.After(time.Until(start.Add(at))):
			}
			m.syncWithRandomMember()
		}
	}()
}

// syncWithRandomMember exchanges full state with one random live member
// (memberlist's push/pull, which is what Join does with a known member).
func (m *Membership) syncWithRandomMember() {
	var others []*memberlist.Node
	for _, n := range m.ml.Members() {
		if n.Name != m.ml.LocalNode().Name && n.State == memberlist.StateAlive {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return
	}
	n := others[rand.IntN(len(others))]
	if _, err := m.ml.Join([]string{n.Name + "/" + n.Address()}); err != nil {
		m.log.Debug("settle sync failed", "peer", n.Name, "err", err)
	}
}

// hostPortOf gives the ip:port of a live connection to p: memberlist wants
// one in its join address, though our transport dials by peer ID.
func (m *Membership) hostPortOf(p peer.ID) string {
	for _, c := range m.host.Network().ConnsToPeer(p) {
		if ip, port, ok := advertiseAddr([]ma.Multiaddr{c.RemoteMultiaddr()}); ok {
			return net.JoinHostPort(ip.String(), strconv.Itoa(port))
		}
	}
	return "127.0.0.1:1" // never dialled: the peerstore has the real addresses
}

// Members lists every peer this peer has seen, itself included, sorted by
// peer ID.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		c := *mem
		c.Addrs = slices.Clone(mem.Addrs)
		out = append(out, c)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return cmpString(string(a.ID), string(b.ID)) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// NumAlive counts the members in the group, self included.
func (m *Membership) NumAlive() int { return m.ml.NumMembers() }

// IsAlive says whether p is an alive member of the group.
func (m *Membership) IsAlive(p peer.ID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.members[p]
	return mem != nil && mem.State == StateAlive
}

// Subscribe returns a channel of every membership event from now on, in
// order, and a function that ends the subscription. Events are queued
// without bound, so a slow subscriber loses nothing and blocks no one.
func (m *Membership) Subscribe() (<-chan Event, func()) {
	s := newSubscriber()
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s.out, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
		s.close()
	}
}

// Leave tells the group this peer is going, waiting at most timeout for the
// news to spread, then stops membership.
func (m *Membership) Leave(timeout time.Duration) error {
	// First the leaving flag in our metadata, so that the departure that
	// follows reads as a leave and not a failure.
	m.mu.Lock()
	m.leaving = true
	m.mu.Unlock()
	start := time.Now()
	err := m.ml.UpdateNode(timeout / 2)
	if err == nil {
		// The flag and the departure travel by different gossip paths; a
		// peer that hears of the departure first takes it for a failure.
		// A few gossip rounds let the flag go ahead.
		time.Sleep(min(leaveFlagLead, timeout/4))
		err = m.ml.Leave(timeout - time.Since(start))
	}
	if serr := m.Close(); err == nil {
		err = serr
	}
	return err
}

// UpdateMeta gossips this peer's metadata again (after its fields or
// addresses changed), waiting at most timeout for the first pushes.
func (m *Membership) UpdateMeta(timeout time.Duration) error {
	return m.ml.UpdateNode(timeout)
}

// leaveFlagLead is how long the leaving flag spreads before the departure.
const leaveFlagLead = 500 * time.Millisecond

// Close stops membership without telling the group.
func (m *Membership) Close() error {
	m.mu.Lock()
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	m.mu.Unlock()
	m.wg.Wait()
	err := m.ml.Shutdown()
	m.mu.Lock()
	subs := m.subs
	m.subs = map[*subscriber]struct{}{}
	m.mu.Unlock()
	for s := range subs {
		s.close()
	}
	return err
}

// record applies a memberlist notification to the table and queues the
// event. memberlist calls it holding its own lock: it must not call back.
func (m *Membership) record(n *memberlist.Node, kind EventKind) {
	pid, err := peer.Decode(n.Name)
	if err != nil {
		m.log.Warn("member with a name that is not a peer ID ignored", "name", n.Name)
		return
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("member metadata ignored", "peer", pid, "err", err)
	}
	addrs := meta.addrs
	if kind == EventFailed && meta.leaving {
		kind = EventLeft
	}
	state := StateAlive
	switch kind {
	case EventLeft:
		state = StateLeft
	case EventFailed:
		state = StateDead
	}
	now := time.Now()
	self := pid == m.host.ID()
	if !self && state == StateAlive {
		if len(addrs) > 0 {
			m.host.Peerstore().AddAddrs(pid, addrs, memberAddrTTL)
		}
		if kind == EventJoined {
			m.tr.warm(pid)
		}
	}
	if !self && state != StateAlive {
		m.tr.forget(pid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.members[pid]
	if mem == nil {
		mem = &Member{ID: pid, Self: self}
		m.members[pid] = mem
	}
	if mem.State != state {
		mem.Since = now
	}
	mem.State = state
	if len(addrs) > 0 {
		mem.Addrs = addrs
	}
	if err == nil {
		mem.Fields = meta.fields
	}
	ev := Event{Kind: kind, Member: *mem}
	ev.Member.Addrs = slices.Clone(mem.Addrs)
	for s := range m.subs {
		s.push(ev)
	}
}

// memberAddrTTL keeps a member's advertised addresses while it is in the
// group; memberlist re-announces them on every update.
const memberAddrTTL = time.Hour

type eventDelegate Membership

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) {
	(*Membership)(d).record(n, EventJoined)
}

func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) {
	(*Membership)(d).record(n, EventUpdated)
}

// NotifyLeave cannot tell a leave from a failure by n.State (memberlist
// never sets it); record does, by the leaving flag in n.Meta.
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	(*Membership)(d).record(n, EventFailed)
}

type metaDelegate Membership

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	leaving := d.leaving
	d.mu.Unlock()
	addrs := d.host.Addrs()
	if d.cfg.Addrs != nil {
		addrs = d.cfg.Addrs()
	}
	var fields []MetaField
	if d.cfg.Fields != nil {
		fields = d.cfg.Fields()
	}
	return encodeMeta(nodeMeta{addrs: Advertisable(addrs), leaving: leaving, fields: fields}, limit)
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// Advertisable drops loopback addresses unless there is nothing else: a
// remote peer cannot reach our loopback, but a devnet on one machine can.
func Advertisable(addrs []ma.Multiaddr) []ma.Multiaddr {
	var routable []ma.Multiaddr
	for _, a := range addrs {
		if !manet.IsIPLoopback(a) {
			routable = append(routable, a)
		}
	}
	if len(routable) == 0 {
		return addrs
	}
	return routable
}

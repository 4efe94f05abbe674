package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/overlay"
)

// natLayer is the node's NAT traversal: STUN on the QUIC socket, the
// reachability advert in membership metadata, and the supernode election.
type natLayer struct {
	svc      *nat.Service // nil when STUN could not start (why in off)
	off      string
	reach    *nat.Reach
	relay    *nat.RelayService // on while this peer is a supernode
	punch    *nat.Puncher      // the pair policy, as DCUtR's filter
	reserver *nat.Reserver     // keeps reservations while it is behind a NAT
	readvert chan struct{}     // the advert or addresses changed: gossip them
	book     *vouchBook        // the members this peer has dialed back
	firsts   firstConns        // when each peer was first reached, relayed and direct
	// upgradeKick names a peer just reached through a circuit, for an
	// upgrade attempt at once.
	upgradeKick chan peer.ID
	// noUpgradeDials: Config.NoUpgradeDials, upgradeRelayed is off and
	// only DCUtR upgrades relayed pairs.
	noUpgradeDials bool
}

// upgradeDelay is how long after a circuit comes up its ends try to dial
// each other directly.
const upgradeDelay = 200 * time.Millisecond

// firstConns records, per peer, when this peer first had a relayed and a
// direct connection with it: the time a pair took to go from relayed to
// direct (a hole punch, or a dial that worked once a circuit existed).
type firstConns struct {
	mu              sync.Mutex
	relayed, direct map[peer.ID]time.Time
}

func (f *firstConns) seen(p peer.ID, relayed bool, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.relayed == nil {
		f.relayed, f.direct = map[peer.ID]time.Time{}, map[peer.ID]time.Time{}
	}
	m := f.direct
	if relayed {
		m = f.relayed
	}
	if _, ok := m[p]; !ok && len(m) < 65536 {
		m[p] = at
	}
}

// upgrade is how long after its first relayed connection p was first
// reached directly: -1 if never relayed, or relayed and not yet direct; 0
// if direct first.
func (f *firstConns) upgrade(p peer.ID) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, rok := f.relayed[p]
	d, dok := f.direct[p]
	switch {
	case !dok:
		return -1
	case !rok || !d.After(r):
		return 0
	}
	return d.Sub(r).Seconds()
}

func isCircuitConn(c network.Conn) bool {
	_, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// Vouching: a member that claims to be public is dialed back with a fresh
// TCP handshake (not a libp2p connection, which could reuse one the member
// opened) to the public address it advertises; reached, it is vouched for
// in this peer's advert for vouchFresh, and checked again every
// vouchRecheck. The election counts a claim only with others' vouches.
const (
	vouchFresh   = 10 * time.Minute
	vouchRecheck = 3 * time.Minute
	vouchRetry   = 10 * time.Second
	vouchTimeout = 2 * time.Second
)

type vouchBook struct {
	mu       sync.Mutex
	verified map[peer.ID]time.Time // last successful dial-back
	tried    map[peer.ID]time.Time // last attempt
	busy     map[peer.ID]bool
}

func newVouchBook() *vouchBook {
	return &vouchBook{verified: map[peer.ID]time.Time{}, tried: map[peer.ID]time.Time{}, busy: map[peer.ID]bool{}}
}

// vouches are the tags of the members dialed back within vouchFresh.
func (b *vouchBook) vouches() []uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []uint32
	for p, at := range b.verified {
		if time.Since(at) < vouchFresh {
			out = append(out, nat.VouchTag(p.String()))
		}
	}
	return out
}

// checkClaims dials back the members that claim to be public and are due.
func (n *Node) checkClaims(l *natLayer) {
	now := time.Now()
	for _, m := range n.members.Members() {
		if m.Self || m.State != overlay.StateAlive {
			continue
		}
		v, ok := m.Field(overlay.MetaTagReach)
		if !ok {
			continue
		}
		a, err := nat.DecodeAdvert(v)
		if err != nil || a.Kind != nat.Public || !a.Reachable {
			continue
		}
		addr, ok := dialBackAddr(m.Addrs)
		if !ok {
			continue
		}
		b := l.book
		b.mu.Lock()
		due := !b.busy[m.ID] && now.Sub(b.verified[m.ID]) > vouchRecheck && now.Sub(b.tried[m.ID]) > vouchRetry
		if due {
			b.busy[m.ID], b.tried[m.ID] = true, now
		}
		b.mu.Unlock()
		if !due {
			continue
		}
		n.wg.Add(1)
		go func(p peer.ID) {
			defer n.wg.Done()
			c, err := net.DialTimeout("tcp", addr, vouchTimeout)
			b.mu.Lock()
			b.busy[p] = false
			if err == nil {
				b.verified[p] = time.Now()
			}
			b.mu.Unlock()
			if err == nil {
				_ = c.Close()
				l.changed()
			}
		}(m.ID)
	}
}

// upgradeRelayed tries, for each peer this one reaches only through a
// circuit, a direct dial, when the pair policy allows it now: DCUtR starts
// only on an inbound circuit and only once both ends know a public address
// of their own, so a pair that met before its STUN mapping was known (a
// peer that just joined) could stay relayed for good. Both ends run this
// pass every second, so their dials cross, which is the hole punch for two
// endpoint-independent mappings.
func (n *Node) upgradeRelayed(l *natLayer) {
	if l.noUpgradeDials {
		return
	}
	for _, p := range n.host.Network().Peers() {
		conns := n.host.Network().ConnsToPeer(p)
		if len(conns) == 0 || overlay.HasDirect(n.host, p) {
			continue
		}
		var direct []ma.Multiaddr
		for _, a := range n.host.Peerstore().Addrs(p) {
			if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err != nil {
				direct = append(direct, a)
			}
		}
		if len(direct) == 0 {
			continue
		}
		// No direct connection now, whatever an earlier punch said (a
		// connection it made may be gone without a word).
		l.punch.Lost(p)
		if !l.punch.Try(p) {
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(network.WithForceDirectDial(context.Background(), "upgrade a relayed pair"), 5*time.Second)
			defer cancel()
			ok, err := n.dialDirect(ctx, p, direct)
			l.punch.Outcome(p, ok, err)
		}()
	}
}

// dialDirect dials p directly at addrs and reports whether a direct
// connection to p is then open, and if not, why.
//
// libp2p's per-peer dial worker answers a request for an address it
// dialled before, while it lives, with the connection that dial made,
// even if that connection has closed since: a hole punch that made a
// connection a moment ago (to a peer that then restarted, say) makes the
// next forced dial return at once, with no dial made and nothing
// connected. Such an answer is not an attempt: the dial is made again
// once that worker is gone.
func (n *Node) dialDirect(ctx context.Context, p peer.ID, addrs []ma.Multiaddr) (bool, error) {
	for {
		err := n.host.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs})
		if err != nil {
			return false, err
		}
		if overlay.HasDirect(n.host, p) {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, fmt.Errorf("connected, but not directly (to %v; connections: %s)", addrs, describeConns(n.host.Network().ConnsToPeer(p)))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// dialBackAddr is the TCP address a dial-back goes to: the first public
// one the member advertises, else the first that is not loopback (a LAN).
func dialBackAddr(addrs []ma.Multiaddr) (string, bool) {
	var fallback string
	for _, a := range addrs {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		ip, network, port, ok := overlay.IPPort(a)
		if !ok || network != "tcp" || ip.IsLoopback() || ip.IsUnspecified() {
			continue
		}
		hp := net.JoinHostPort(ip.String(), strconv.Itoa(port))
		if ipa, ok := netip.AddrFromSlice(ip); ok && nat.IsPublic(ipa.Unmap()) {
			return hp, true
		}
		if fallback == "" {
			fallback = hp
		}
	}
	return fallback, fallback != ""
}

// natStep is how often the election runs and the advert is checked: about
// a gossip round.
const natStep = time.Second

// startNAT starts STUN on the host's QUIC socket. It never fails the node:
// without the socket (QUIC off, no IPv4 listener) the peer runs with an
// Unknown mapping and says why in netcheck.
func (n *Node) startNAT(cm *quicreuse.ConnManager, cfg Config, log *slog.Logger, hooks *hostHooks) *natLayer {
	l := &natLayer{readvert: make(chan struct{}, 1), punch: hooks.punch, book: newVouchBook(), upgradeKick: make(chan peer.ID, 64),
		noUpgradeDials: cfg.NoUpgradeDials}
	if l.noUpgradeDials {
		log.Warn("TEST/DIAGNOSIS MODE: no upgrade dials of our own; relayed pairs go direct only by DCUtR, or stay relayed", "no_upgrade_dials", true)
	}
	pc, local, err := nat.SharedSocket(cm, n.host)
	if err != nil {
		l.off = err.Error()
		log.Warn("STUN is off", "err", err)
	} else {
		l.svc = nat.NewService(pc, local, nat.ServiceConfig{
			Servers:  func() []netip.AddrPort { return nat.STUNServers(n.host.ID().String(), n.natMembers()) },
			OnChange: l.changed,
			Log:      log.With("layer", "nat"),
		})
	}
	l.reach = nat.NewReach(l.svc, nat.ReachConfig{
		Self:        n.host.ID().String(),
		Resources:   nat.Resources{Cores: runtime.NumCPU(), MemMiB: int(totalRAM() >> 20), UploadBps: cfg.natUploadBps()},
		Members:     n.natMembers,
		Reachable:   n.dialedBack,
		Vouches:     l.book.vouches,
		Election:    nat.ElectionParams{MinUptimeSec: int64(cfg.SupernodeMinUptimeSec)},
		Log:         log.With("layer", "nat"),
		ClaimPublic: cfg.TestClaimPublic,
	})
	if cfg.TestClaimPublic {
		log.Warn("TEST MODE: this peer claims to be public and dialed back, whatever STUN found: a lying peer", "test_claim_public", true)
	}
	// The relay's ACL admits the members of the group, open or closed; in
	// a closed group its streams pass the member gate first as well.
	l.relay = nat.NewRelayService(n.host, n.IsMember, log.With("layer", "nat"))
	// The reserver's loop starts at once, before n.nat is set: it reads l.
	l.reserver = nat.NewReserver(n.host, l.needsRelay, func() []nat.Relay { return n.relayCandidates(l) }, l.changed, log.With("layer", "nat"))
	l.punch.Bind(func() nat.Kind { return l.reach.Advert().Kind }, n.kindOf, log.With("layer", "nat"))
	// A punched pair whose direct connection is gone may punch again.
	n.host.Network().Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		circuit := isCircuitConn(c)
		l.firsts.seen(c.RemotePeer(), circuit, time.Now())
		if circuit {
			// Both ends see the circuit come up at once: dialing
			// directly now makes their dials cross. (A moment first,
			// for identify to bring the other end's addresses.)
			p := c.RemotePeer()
			time.AfterFunc(upgradeDelay, func() {
				select {
				case l.upgradeKick <- p:
				default: // a pass is due anyway
				}
			})
		}
	}, DisconnectedF: func(nw network.Network, c network.Conn) {
		if isCircuitConn(c) {
			return
		}
		p := c.RemotePeer()
		for _, o := range nw.ConnsToPeer(p) {
			if o != c && !isCircuitConn(o) && !o.IsClosed() {
				return // a direct one is left
			}
		}
		l.punch.Lost(p)
	}})
	return l
}

// kindOf is a member's mapping as it advertises it (Unknown without one).
func (n *Node) kindOf(p peer.ID) nat.Kind {
	if n.members == nil {
		return nat.Unknown
	}
	for _, m := range n.members.Members() {
		if m.ID != p {
			continue
		}
		if v, ok := m.Field(overlay.MetaTagReach); ok {
			if a, err := nat.DecodeAdvert(v); err == nil {
				return a.Kind
			}
		}
	}
	return nat.Unknown
}

// mappedAddrs is this peer's STUN-mapped QUIC address when it is behind an
// easy NAT: where others, and a hole punch, reach it.
func (n *Node) mappedAddrs() []ma.Multiaddr {
	l := n.natp.Load()
	if l == nil {
		return nil
	}
	adv := l.reach.Advert()
	if adv.Kind != nat.Easy || !adv.Mapped.IsValid() || !adv.Mapped.Addr().Is4() {
		return nil
	}
	a, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", adv.Mapped.Addr(), adv.Mapped.Port()))
	if err != nil {
		return nil
	}
	return []ma.Multiaddr{a}
}

// changed asks the NAT loop to gossip the advert and addresses again; it
// never blocks (it is called from libp2p's notifications).
func (l *natLayer) changed() {
	select {
	case l.readvert <- struct{}{}:
	default:
	}
}

func (l *natLayer) close() error {
	errs := []error{l.reserver.Close(), l.relay.Close()}
	if l.svc != nil {
		errs = append(errs, l.svc.Close())
	}
	return errors.Join(errs...)
}

// needsRelay says whether this peer is behind a NAT, so that others need a
// circuit to reach it.
func (l *natLayer) needsRelay() bool {
	k := l.reach.Advert().Kind
	return k == nat.Easy || k == nat.Hard
}

// relayCandidates are the elected supernodes but this peer, with the
// round trips RON measured to them (none before the router starts).
func (n *Node) relayCandidates(l *natLayer) []nat.Relay {
	rtts := map[string]time.Duration{}
	if n.router != nil {
		for _, ri := range n.router.Routes() {
			if ri.Direct.RTTms > 0 {
				rtts[ri.Peer.String()] = time.Duration(ri.Direct.RTTms * float64(time.Millisecond))
			}
		}
	}
	var out []nat.Relay
	self := n.host.ID().String()
	for _, id := range l.reach.Supernodes() {
		if id != self {
			out = append(out, nat.Relay{ID: id, RTT: rtts[id]})
		}
	}
	return out
}

// natMembers is the alive members with their adverts.
func (n *Node) natMembers() []nat.Member {
	if n.members == nil {
		return nil
	}
	var out []nat.Member
	for _, m := range n.members.Members() {
		if m.State != overlay.StateAlive {
			continue
		}
		nm := nat.Member{ID: m.ID.String(), QUIC: nat.QUICAddrs(m.Addrs)}
		if v, ok := m.Field(overlay.MetaTagReach); ok {
			if a, err := nat.DecodeAdvert(v); err == nil {
				nm.Advert, nm.HasAdvert = a, true
			}
		}
		out = append(out, nm)
	}
	return out
}

// dialedBack says whether a member has dialed this peer directly: an
// inbound connection, not relayed, from a member. That is the evidence
// that unsolicited inbound connections reach this peer.
func (n *Node) dialedBack() bool {
	for _, c := range n.host.Network().Conns() {
		if c.Stat().Direction != network.DirInbound || c.Stat().Limited {
			continue
		}
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		if n.members != nil && n.members.IsAlive(c.RemotePeer()) {
			return true
		}
	}
	return false
}

// natFields is this peer's reachability advert, for membership metadata.
func (n *Node) natFields() []overlay.MetaField {
	l := n.natp.Load()
	if l == nil {
		return nil
	}
	return []overlay.MetaField{{Tag: overlay.MetaTagReach, Value: l.reach.Advert().Encode(nil)}}
}

// advertAddrs is what this peer advertises to its group: its listen
// addresses, with the STUN-mapped QUIC address first when it is behind an
// easy NAT (the address peers can dial, or punch to), and without
// loopback addresses when it has others.
func (n *Node) advertAddrs() []ma.Multiaddr {
	addrs := n.host.Addrs()
	l := n.natp.Load()
	if l == nil {
		return addrs
	}
	var front []ma.Multiaddr
	for _, a := range n.mappedAddrs() {
		// First, and once (the host's own list has it too).
		addrs = slices.DeleteFunc(slices.Clone(addrs), a.Equal)
		front = append(front, a)
	}
	// Behind a NAT, the circuits through its supernodes are how others
	// reach it for sure.
	front = append(front, l.reserver.CircuitAddrs()...)
	return append(front, addrs...)
}

// natLoop runs the election every step and gossips the advert when it
// changed.
func (n *Node) natLoop(ctx context.Context) {
	t := time.NewTicker(natStep)
	defer t.Stop()
	// Membership news (a member's advert, a join) and this peer's own
	// changes run a step at once, not at the next tick: election,
	// vouches and reservations each wait on the one before, and a tick
	// apiece made a new group wait seconds for its relays.
	events, unsubscribe := n.members.Subscribe()
	defer unsubscribe()
	lastKind := nat.Unknown
	gossip := false // the addresses changed: gossip even if the advert did not
	step := func(now time.Time) {
		n.checkClaims(n.nat)
		n.upgradeRelayed(n.nat)
		changed := n.nat.reach.Step(now)
		if k := n.nat.reach.Advert().Kind; k != lastKind {
			lastKind = k
			changed = true
			n.nat.reserver.Kick()
		}
		super, _ := n.nat.reach.Role()
		if err := n.nat.relay.SetOn(super); err != nil {
			n.log.Warn("relay service", "err", err)
		}
		if changed {
			n.nat.reserver.Kick()
		}
		if changed || gossip {
			gossip = false
			_ = n.members.UpdateMeta(time.Second)
		}
	}
	var soon <-chan time.Time // a step due shortly (news come in bursts)
	later := func() {
		if soon == nil {
			soon = time.After(natDebounce)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			step(now)
		case now := <-soon:
			soon = nil
			step(now)
		case <-events:
			later()
		case <-n.nat.readvert:
			gossip = true
			later()
		case <-n.nat.upgradeKick:
			n.upgradeRelayed(n.nat)
		}
	}
}

// natDebounce gathers a burst of news into one step.
const natDebounce = 50 * time.Millisecond

// NetcheckInfo is what `peer netcheck` prints: how this peer is reached.
type NetcheckInfo struct {
	ID                 string             `json:"id"`
	TCP                []string           `json:"tcp"`  // addresses others dial over TCP
	QUIC               []string           `json:"quic"` // and over QUIC (the STUN-mapped one first)
	Mapping            string             `json:"mapping"`
	MappedAddr         string             `json:"mapped_addr,omitempty"`
	PortPreserved      bool               `json:"port_preserved"`
	STUNServers        []nat.ServerReport `json:"stun_servers"`
	ClassifiedAfterSec float64            `json:"classified_after_s"`
	STUNOff            string             `json:"stun_off,omitempty"`
	Reachable          bool               `json:"reachable"`
	Role               string             `json:"role"`
	RoleWhy            string             `json:"role_why"`
	Supernodes         []SupernodeInfo    `json:"supernodes"`
	Reservations       []ReservationInfo  `json:"reservations"`
	RelayOn            bool               `json:"relay_on"` // this peer relays for others (a supernode)
	Relayed            nat.RelayStats     `json:"relayed"`  // what this peer's relay carried, as a supernode
	Punches            nat.PunchStats     `json:"punches"`  // hole punches allowed, succeeded, refused by the pair policy
	Peers              []PeerReach        `json:"peers"`
	// OverheadBps is STUN's bytes per second, sent and received, answers
	// to others included, over the last two minutes.
	OverheadBps float64 `json:"stun_overhead_bytes_per_s"`
}

// SupernodeInfo is one elected supernode.
type SupernodeInfo struct {
	ID    string  `json:"id"`
	RTTms float64 `json:"rtt_ms"` // 0: not measured
}

// ReservationInfo is one relay reservation this peer holds.
type ReservationInfo struct {
	Supernode    string  `json:"supernode"`
	ExpiresInSec float64 `json:"expires_in_s"`
}

// PeerReach is how this peer reaches one member.
type PeerReach struct {
	ID      string `json:"id"`
	Mapping string `json:"mapping"` // the member's, from its advert
	Path    string `json:"path"`    // direct, hole-punched, relayed, ron or none
	Via     string `json:"via,omitempty"`
	// UpgradeSec is how long after the first relayed connection the pair
	// was first connected directly: 0 when direct from the start, -1 when
	// not (yet) direct.
	UpgradeSec float64 `json:"upgrade_s"`
}

func (n *Node) netcheck() NetcheckInfo {
	out := NetcheckInfo{ID: n.host.ID().String(), TCP: []string{}, QUIC: []string{}, STUNServers: []nat.ServerReport{},
		Supernodes: []SupernodeInfo{}, Reservations: []ReservationInfo{}, Peers: []PeerReach{}}
	for _, a := range overlay.Advertisable(n.advertAddrs()) {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			out.QUIC = append(out.QUIC, a.String())
		} else if _, err := a.ValueForProtocol(ma.P_TCP); err == nil {
			out.TCP = append(out.TCP, a.String())
		}
	}
	adv := n.nat.reach.Advert()
	out.Mapping, out.PortPreserved, out.Reachable = adv.Kind.String(), adv.PortPreserved, adv.Reachable
	if adv.Mapped.IsValid() {
		out.MappedAddr = adv.Mapped.String()
	}
	out.ClassifiedAfterSec = -1
	if svc := n.nat.svc; svc != nil {
		r := svc.Report()
		out.STUNServers = append(out.STUNServers, r.Servers...)
		out.ClassifiedAfterSec = r.ClassifiedAfterSec
		out.OverheadBps = r.RecentBps
	} else {
		out.STUNOff = n.nat.off
	}
	super, why := n.nat.reach.Role()
	out.Role, out.RoleWhy = "member", why
	if super {
		out.Role = "supernode"
	}
	rtts := map[string]float64{}
	for _, ri := range n.router.Routes() {
		rtts[ri.Peer.String()] = ri.Direct.RTTms
	}
	for _, id := range n.nat.reach.Supernodes() {
		out.Supernodes = append(out.Supernodes, SupernodeInfo{ID: id, RTTms: rtts[id]})
	}
	now := time.Now()
	for _, h := range n.nat.reserver.Held() {
		out.Reservations = append(out.Reservations, ReservationInfo{Supernode: h.Supernode.String(), ExpiresInSec: h.Expires.Sub(now).Seconds()})
	}
	out.RelayOn = n.nat.relay.On()
	out.Relayed = n.nat.relay.Stats()
	out.Punches = n.nat.punch.Stats()
	for _, m := range n.natMembers() {
		if m.ID == out.ID {
			continue
		}
		pr := PeerReach{ID: m.ID, Mapping: nat.Unknown.String()}
		if m.HasAdvert {
			pr.Mapping = m.Advert.Kind.String()
		}
		pr.Path, pr.Via = n.pathTo(m.ID)
		if pid, err := peer.Decode(m.ID); err == nil {
			pr.UpgradeSec = n.nat.firsts.upgrade(pid)
		}
		out.Peers = append(out.Peers, pr)
	}
	return out
}

// pathTo says how this peer reaches id now: over a direct connection, a
// relayed one (via a supernode), or RON's one-hop forwarding.
func (n *Node) pathTo(id string) (path, via string) {
	p, err := peer.Decode(id)
	if err != nil {
		return "none", ""
	}
	// Of several circuits, the one libp2p puts new streams on: unlimited
	// before limited, then the one with the most streams.
	relayed, best, bestLimited := "", -1, true
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if c.Stat().Limited || isCircuitConn(c) {
			lim, streams := c.Stat().Limited, len(c.GetStreams())
			if best < 0 || (bestLimited && !lim) || (lim == bestLimited && streams > best) {
				relayed, best, bestLimited = relayVia(c.RemoteMultiaddr()), streams, lim
			}
			continue
		}
		if n.nat.punch.Punched(p) {
			return "hole-punched", ""
		}
		return "direct", ""
	}
	if relayed != "" {
		return "relayed", relayed
	}
	if route := n.router.Route(p, overlay.ClassDefault); route.OK && route.Via != "" {
		return "ron", route.Via.String()
	}
	return "none", ""
}

// relayVia reads the relay's peer ID from a circuit address.
func relayVia(a ma.Multiaddr) string {
	v, err := a.ValueForProtocol(ma.P_P2P)
	if err != nil {
		return "?"
	}
	return v
}

func registerNAT(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("GET /v1/netcheck", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.netcheck())
	})
}

// Netcheck asks the daemon how it is reached.
func (c *Client) Netcheck(ctx context.Context) (NetcheckInfo, error) {
	var out NetcheckInfo
	err := c.Get(ctx, "/v1/netcheck", &out)
	return out, err
}

// ReachInfo is a peer's reachability as status and members show it.
type ReachInfo struct {
	Mapping   string `json:"mapping"`
	Reachable bool   `json:"reachable"`
	Role      string `json:"role"`
}

func reachOf(a nat.Advert) ReachInfo {
	ri := ReachInfo{Mapping: a.Kind.String(), Reachable: a.Reachable, Role: "member"}
	if a.Supernode {
		ri.Role = "supernode"
	}
	return ri
}

// describeConns says what connections there are, for a log line.
func describeConns(cs []network.Conn) string {
	if len(cs) == 0 {
		return "none"
	}
	var parts []string
	for _, c := range cs {
		st := c.Stat()
		parts = append(parts, fmt.Sprintf("%s %s limited=%v closed=%v age=%s", c.RemoteMultiaddr(), st.Direction,
			st.Limited, c.IsClosed(), time.Since(st.Opened).Round(time.Millisecond)))
	}
	return strings.Join(parts, "; ")
}

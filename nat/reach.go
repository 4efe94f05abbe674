package nat

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Reach is this peer's NAT layer as the node sees it: the STUN service on
// the QUIC socket, the advert it gossips, and the supernode election it
// runs, like every member, on the adverts of the group.

// Member is one member of the group as the NAT layer sees it, filled by the
// node from membership.
type Member struct {
	ID        string
	Advert    Advert
	HasAdvert bool             // false: an older peer, or none gossiped yet
	QUIC      []netip.AddrPort // the IPv4 QUIC addresses it advertises
}

// Resources are what this peer offers as a supernode.
type Resources struct {
	Cores     int
	MemMiB    int
	UploadBps int64 // 0: uncapped
}

// ReachConfig wires a Reach.
type ReachConfig struct {
	Self      string
	Resources Resources
	// Members lists the alive members, self included or not.
	Members func() []Member
	// Reachable says whether others have dialed this peer directly
	// (an inbound connection that was not relayed is open).
	Reachable func() bool
	// Vouches are the members this peer vouches for (VouchTag of each):
	// those it reached with a fresh TCP handshake at the public address
	// they advertise.
	Vouches  func() []uint32
	Election ElectionParams
	Log      *slog.Logger
	// ClaimPublic makes the advert lie, for tests: public and dialed back
	// whatever STUN and the connections say.
	ClaimPublic bool
}

// Reach runs the election and keeps the advert.
type Reach struct {
	cfg     ReachConfig
	svc     *Service
	started time.Time

	mu       sync.Mutex
	advert   Advert
	elected  []string
	changes  []time.Time // when the elected set changed (the last 64)
	role     bool
	why      string
	supernow map[string]bool
	// claimSince is when each member's unverified claim of public
	// reachability was first seen; claimLogged, those logged.
	claimSince  map[string]time.Time
	claimLogged map[string]bool
}

// NewReach binds the election to svc (nil: no STUN; the advert then says
// Unknown).
func NewReach(svc *Service, cfg ReachConfig) *Reach {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Members == nil {
		cfg.Members = func() []Member { return nil }
	}
	if cfg.Reachable == nil {
		cfg.Reachable = func() bool { return false }
	}
	if cfg.Vouches == nil {
		cfg.Vouches = func() []uint32 { return nil }
	}
	r := &Reach{cfg: cfg, svc: svc, started: time.Now(), why: "not yet decided"}
	r.advert = r.build(false)
	return r
}

// Service is the STUN service, or nil.
func (r *Reach) Service() *Service { return r.svc }

func (r *Reach) mapping() Mapping {
	if r.svc == nil {
		return Mapping{}
	}
	return r.svc.Mapping()
}

func (r *Reach) build(super bool) Advert {
	m := r.mapping()
	reachable := r.cfg.Reachable()
	if m.Kind == Unknown && reachable && r.svc != nil && r.svc.SeesLocal() {
		// A group with one other public peer gives one STUN server; its
		// answer showing our own address, and members dialing us
		// directly, say public as surely as two servers would.
		m.Kind = Public
	}
	if r.cfg.ClaimPublic {
		m.Kind, reachable = Public, true
	}
	return Advert{
		Kind: m.Kind, PortPreserved: m.PortPreserved, Mapped: m.Addr,
		Reachable: reachable, Supernode: super,
		UptimeSec: RoundUptime(int64(time.Since(r.started).Seconds())),
		Cores:     r.cfg.Resources.Cores, MemMiB: r.cfg.Resources.MemMiB, UploadBps: r.cfg.Resources.UploadBps,
		Vouches: sortedVouches(r.cfg.Vouches()),
	}
}

func sortedVouches(vs []uint32) []uint32 {
	vs = slices.Compact(slices.Sorted(slices.Values(vs)))
	if len(vs) > MaxVouches {
		vs = vs[:MaxVouches]
	}
	if len(vs) == 0 {
		return nil
	}
	return vs
}

// Candidates turns members' adverts into the election's inputs. A member
// with no advert is never a candidate. A claim of public reachability
// counts (PublicConfirmed) only when others vouch for it: they reached the
// member with a fresh TCP handshake at its advertised address. Two
// vouches are needed, or one in a group of two: a peer that claims an
// address it cannot be reached on is never elected.
func Candidates(members []Member) []Candidate {
	advertised := 0
	for _, m := range members {
		if m.HasAdvert {
			advertised++
		}
	}
	need := min(2, advertised-1)
	var out []Candidate
	for _, m := range members {
		if !m.HasAdvert {
			continue
		}
		a := m.Advert
		out = append(out, Candidate{
			ID:              m.ID,
			PublicConfirmed: a.Kind == Public && a.Reachable && vouchesFor(members, m.ID) >= need,
			UptimeSec:       a.UptimeSec, Cores: a.Cores, MemMiB: a.MemMiB, UploadBps: a.UploadBps,
			Incumbent: a.Supernode,
		})
	}
	return out
}

// vouchesFor counts the other members that vouch for id. The tag is
// hashed once here, not once per member: an election runs on every
// membership event, over every pair of members.
func vouchesFor(members []Member, id string) int {
	n := 0
	tag := VouchTag(id)
	for _, m := range members {
		if m.ID != id && m.HasAdvert && m.Advert.vouchesTag(tag) {
			n++
		}
	}
	return n
}

// Step runs one election on the group's adverts, with this peer's own
// advert as it would gossip it now, and updates the advert: the role is
// taken or dropped by the result. It returns whether the advert changed
// (the node then gossips it). Call it on every gossip round or so.
func (r *Reach) Step(now time.Time) bool {
	members := r.cfg.Members()
	r.mu.Lock()
	defer r.mu.Unlock()
	self := r.build(r.role)
	members = slices.DeleteFunc(slices.Clone(members), func(m Member) bool { return m.ID == r.cfg.Self })
	members = append(members, Member{ID: r.cfg.Self, Advert: self, HasAdvert: true})
	cands := Candidates(members)
	r.noteUnverified(now, members, cands)
	elected := Elect(cands, r.cfg.Election)
	if !slices.Equal(elected, r.elected) {
		r.changes = append(r.changes, now)
		if len(r.changes) > 64 {
			r.changes = r.changes[1:]
		}
		r.cfg.Log.Info("supernodes elected", "set", elected)
		r.elected = elected
	}
	r.supernow = map[string]bool{}
	for _, id := range elected {
		r.supernow[id] = true
	}
	role := r.supernow[r.cfg.Self]
	var mine Candidate
	for _, c := range cands {
		if c.ID == r.cfg.Self {
			mine = c
		}
	}
	r.why = r.reason(role, self, mine)
	if role != r.role {
		r.cfg.Log.Info("supernode role", "on", role, "why", r.why)
	}
	r.role = role
	self.Supernode = role
	changed := !self.Equal(r.advert)
	r.advert = self
	return changed
}

// reason says why this peer holds the role or not.
func (r *Reach) reason(role bool, self Advert, c Candidate) string {
	p := r.cfg.Election.withDefaults()
	switch {
	case role:
		return fmt.Sprintf("elected: public and reachable, score %d, one of %d supernodes", Score(c), len(r.elected))
	case self.Kind != Public:
		return fmt.Sprintf("not public (mapping %s)", self.Kind)
	case !self.Reachable:
		return "public by STUN, but no member has dialed it directly yet"
	case !c.PublicConfirmed:
		return "public and dialed, but too few members have vouched for its address (a fresh TCP handshake to it) yet"
	case !Eligible(c, p):
		return fmt.Sprintf("below the minimums (uptime %d s of %d, %d cores, %d MiB, upload %d B/s)",
			self.UptimeSec, p.MinUptimeSec, self.Cores, self.MemMiB, self.UploadBps)
	}
	return fmt.Sprintf("eligible (score %d), but the %d seats are held", Score(c), len(r.elected))
}

// unverifiedGrace is how long a claim of public reachability may go
// without vouches before it is logged as refused: vouches take a probe
// round and a gossip round to arrive.
const unverifiedGrace = 30 * time.Second

// noteUnverified logs, once per peer, a member that has claimed public
// reachability for unverifiedGrace without others vouching for it.
func (r *Reach) noteUnverified(now time.Time, members []Member, cands []Candidate) {
	if r.claimSince == nil {
		r.claimSince, r.claimLogged = map[string]time.Time{}, map[string]bool{}
	}
	claims := map[string]bool{}
	for _, c := range cands {
		for _, m := range members {
			if m.ID == c.ID && m.Advert.Kind == Public && m.Advert.Reachable && !c.PublicConfirmed {
				claims[c.ID] = true
			}
		}
	}
	for id := range r.claimSince {
		if !claims[id] {
			delete(r.claimSince, id)
		}
	}
	for id := range claims {
		since, ok := r.claimSince[id]
		if !ok {
			r.claimSince[id] = now
			continue
		}
		if now.Sub(since) >= unverifiedGrace && !r.claimLogged[id] && len(r.claimLogged) < 4096 {
			r.claimLogged[id] = true
			r.cfg.Log.Info("not electing a member that claims a public address nobody could reach", "peer", id, "for", now.Sub(since).Round(time.Second))
		}
	}
}

// Advert is what this peer gossips now.
func (r *Reach) Advert() Advert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.advert
}

// Role says whether this peer is a supernode, and why.
func (r *Reach) Role() (supernode bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.role, r.why
}

// Supernodes is the elected set, sorted.
func (r *Reach) Supernodes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.elected)
}

// Changes counts changes of the elected set since since.
func (r *Reach) Changes(since time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.changes {
		if !t.Before(since) {
			n++
		}
	}
	return n
}

// STUNServers orders the members' QUIC addresses as STUN servers:
// supernodes first, then members whose advert says public, then members
// at addresses that count as public, then the rest (on a LAN or loopback
// the members can reach each other whatever the address). Self is left
// out.
func STUNServers(self string, members []Member) []netip.AddrPort {
	rank := func(m Member) int {
		switch {
		case m.HasAdvert && m.Advert.Supernode:
			return 0
		case m.HasAdvert && m.Advert.Kind == Public:
			return 1
		case len(m.QUIC) > 0 && IsPublic(m.QUIC[0].Addr()):
			return 2
		case m.HasAdvert && m.Advert.Kind == Easy:
			// Behind an easy NAT, at its mapped address: it answers
			// the servers it talks to, which lets a public peer with
			// one other public member get a second answer.
			return 4
		case m.HasAdvert && m.Advert.Kind != Unknown:
			return 5 // behind a hard NAT: nowhere to ask it
		}
		return 3
	}
	ms := slices.DeleteFunc(slices.Clone(members), func(m Member) bool { return m.ID == self || len(m.QUIC) == 0 })
	slices.SortStableFunc(ms, func(a, b Member) int {
		if d := rank(a) - rank(b); d != 0 {
			return d
		}
		// Within a rank, an order of this peer's own, so that the
		// group's requests spread over the servers.
		return cmp.Compare(spread(self, a.ID), spread(self, b.ID))
	})
	var out []netip.AddrPort
	for _, m := range ms {
		switch rank(m) {
		case 5:
			continue
		case 4:
			if m.Advert.Mapped.IsValid() {
				out = append(out, m.Advert.Mapped)
			}
			continue
		}
		out = append(out, m.QUIC...)
	}
	return out
}

func spread(self, id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(self))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return h.Sum64()
}

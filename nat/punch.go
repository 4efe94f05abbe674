package nat

import (
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// Puncher is the binding of the pair policy to libp2p's DCUtR: as its
// address filter it lets a hole punch go ahead only for pairs Decide says
// to punch (a nil address list aborts the punch), and as its tracer it
// records each attempt's outcome in the pair's history. It is made before
// the host (the options need it) and bound to the NAT layer after.
type Puncher struct {
	mu     sync.Mutex
	self   func() Kind
	kindOf func(peer.ID) Kind
	hist   map[peer.ID]*PairHistory
	direct map[peer.ID]time.Time // pairs punched to a direct connection, when
	dialed map[peer.ID]time.Time // last plain direct dial Try allowed
	// sessions are DCUtR exchanges under way: the policy allowed one
	// attempt, and DCUtR's own retries of it pass as that one.
	sessions map[peer.ID]*dcutrSession
	log      *slog.Logger

	attempts, successes, refused int64
	dcutr                        DCUtRStats
}

var (
	_ holepunch.AddrFilter  = (*Puncher)(nil)
	_ holepunch.EventTracer = (*Puncher)(nil)
)

// NewPuncher makes an unbound policy: until Bind, every punch is refused.
func NewPuncher() *Puncher {
	return &Puncher{hist: map[peer.ID]*PairHistory{}, direct: map[peer.ID]time.Time{}, dialed: map[peer.ID]time.Time{},
		sessions: map[peer.ID]*dcutrSession{}, log: slog.New(slog.DiscardHandler)}
}

// Bind gives the policy this peer's kind and each remote's (from its
// advert).
func (p *Puncher) Bind(self func() Kind, kindOf func(peer.ID) Kind, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.self, p.kindOf, p.log = self, kindOf, log
}

// A DCUtR exchange (holepunch's DirectConnect, or the answering end's
// side of it) retries its punch up to dcutrTries times, each retry at once
// after the last try's dial failed (within its 10 s timeout), the last
// with the roles switched. The policy counts the whole exchange as one
// attempt: refusing the retries would leave DCUtR one try, and with our
// own upgrade dials off nothing asks again.
const (
	dcutrTries = 3
	// dcutrRetryGap is the longest pause between two tries of one
	// exchange: holepunch's direct dial timeout (10 s) and a margin.
	dcutrRetryGap = 15 * time.Second
)

type dcutrSession struct {
	last  time.Time // the latest try
	tries int
}

// allow decides for remote now, and counts an attempt when it says punch.
// dcutr says the question comes from DCUtR's filter, whose retries of an
// exchange under way pass as its one attempt.
func (p *Puncher) allow(remote peer.ID, count, dcutr bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.self == nil {
		return false
	}
	h := p.hist[remote]
	if h == nil {
		h = &PairHistory{}
		p.hist[remote] = h
	}
	now := time.Now()
	if s := p.sessions[remote]; dcutr && s != nil && now.Sub(s.last) < dcutrRetryGap && s.tries < dcutrTries && !h.Punched {
		if count {
			s.last = now
			s.tries++
		}
		return true
	}
	remoteKind := p.kindOf(remote)
	if remoteKind == Unknown && p.self() != Public {
		// Its advert has not come yet (it just joined): an attempt now
		// would count as easy to hard and wait ten minutes after it
		// failed. Wait for the advert instead.
		return false
	}
	a := Decide(p.self(), remoteKind, *h, now)
	if a.Kind != Punch {
		if count {
			p.refused++
		}
		return false
	}
	if count {
		h.Attempt(now)
		p.attempts++
		if dcutr {
			p.sessions[remote] = &dcutrSession{last: now, tries: 1}
		} else {
			delete(p.sessions, remote)
		}
	}
	return true
}

// FilterLocal implements holepunch.AddrFilter: the addresses this peer
// sends, none (abort) unless the pair may punch now.
func (p *Puncher) FilterLocal(remote peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	if !p.allow(remote, false, true) {
		return nil
	}
	return addrs
}

// FilterRemote implements holepunch.AddrFilter: the remote's addresses to
// punch to, none unless the pair may punch now; an allowed call is one
// attempt.
func (p *Puncher) FilterRemote(remote peer.ID, addrs []ma.Multiaddr) []ma.Multiaddr {
	if !p.allow(remote, true, true) {
		return nil
	}
	return addrs
}

// Trace implements holepunch.EventTracer.
func (p *Puncher) Trace(evt *holepunch.Event) {
	var ok, end bool
	phase := "punch"
	p.mu.Lock()
	switch e := evt.Evt.(type) {
	case *holepunch.StartHolePunchEvt:
		p.dcutr.Punches++
	case *holepunch.EndHolePunchEvt:
		ok, end = e.Success, true
		if ok {
			p.dcutr.PunchSuccesses++
		} else {
			p.dcutr.PunchFailures++
			p.dcutr.LastError = e.Error
		}
	case *holepunch.DirectDialEvt:
		ok, end, phase = e.Success, e.Success, "direct dial" // a failed direct dial is followed by a punch
		if ok {
			p.dcutr.DirectDials++
		} else {
			p.dcutr.DirectDialFailures++
			p.dcutr.LastError = e.Error
		}
	case *holepunch.ProtocolErrorEvt:
		p.dcutr.ProtocolErrors++
		p.dcutr.LastError = e.Error
		log := p.log
		p.mu.Unlock()
		log.Info("DCUtR gave up", "peer", evt.Remote, "err", e.Error)
		return
	}
	if !end {
		p.mu.Unlock()
		return
	}
	h := p.hist[evt.Remote]
	if h == nil {
		h = &PairHistory{}
		p.hist[evt.Remote] = h
	}
	if ok {
		h.Succeeded()
		p.direct[evt.Remote] = time.Now()
		p.successes++
	} else {
		h.Failed()
	}
	log := p.log
	p.mu.Unlock()
	log.Info("hole punch", "peer", evt.Remote, "direct", ok, "by", "DCUtR "+phase)
}

// Try asks the policy whether this peer may try to reach remote directly
// now, on its own (a dial to the remote's mapped address, which crosses the
// remote's own dial to ours when both try at once), and counts the attempt
// if so. Report the outcome with Outcome.
func (p *Puncher) Try(remote peer.ID) bool {
	p.mu.Lock()
	if p.self != nil && p.kindOf(remote) != Unknown && Decide(p.self(), p.kindOf(remote), PairHistory{}, time.Now()).Kind == Direct {
		// One end is public: a plain dial, no punch; at most one every
		// directRetry, so a pair that cannot connect is not hammered.
		now := time.Now()
		ok := now.Sub(p.dialed[remote]) >= directRetry
		if ok {
			p.dialed[remote] = now
		}
		p.mu.Unlock()
		return ok
	}
	p.mu.Unlock()
	return p.allow(remote, true, false)
}

// directRetry spaces the direct dials Try allows for pairs with a public
// end.
const directRetry = 30 * time.Second

// Outcome records how an attempt allowed by Try ended (err: why it
// failed, for the log).
func (p *Puncher) Outcome(remote peer.ID, ok bool, err error) {
	p.mu.Lock()
	h := p.hist[remote]
	if h == nil {
		h = &PairHistory{}
		p.hist[remote] = h
	}
	if ok {
		h.Succeeded()
		p.direct[remote] = time.Now()
		p.successes++
	} else {
		h.Failed()
	}
	log := p.log
	p.mu.Unlock()
	if ok {
		log.Info("direct dial over a relayed pair", "peer", remote, "direct", ok)
	} else {
		log.Info("direct dial over a relayed pair", "peer", remote, "direct", ok, "err", err)
	}
}

// Lost tells the policy the pair's direct connection is gone, so it may
// punch again.
func (p *Puncher) Lost(remote peer.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if h := p.hist[remote]; h != nil {
		h.Lost()
	}
	delete(p.direct, remote)
}

// Punched says whether the direct connection to remote came from a punch.
func (p *Puncher) Punched(remote peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.direct[remote]
	return ok
}

// PunchStats counts punches allowed, that succeeded, and refused: DCUtR's
// and the node's own upgrade dials (Try, Outcome) together; DCUtR is
// what libp2p's hole punch service alone reported to the tracer.
type PunchStats struct {
	Attempts  int64      `json:"attempts"`
	Successes int64      `json:"successes"`
	Refused   int64      `json:"refused"`
	DCUtR     DCUtRStats `json:"dcutr"`
}

// DCUtRStats are the tracer's events from libp2p's hole punch service
// (DCUtR, run by the end that accepted an inbound circuit, and answered
// by the other): its first phase, a plain dial to a public address of the
// remote, and its synchronized punch (CONNECT, SYNC, both ends dialing),
// seen from either end.
type DCUtRStats struct {
	DirectDials        int64 `json:"direct_dial_successes"`
	DirectDialFailures int64 `json:"direct_dial_failures"`
	Punches            int64 `json:"punches_started"`
	PunchSuccesses     int64 `json:"punch_successes"`
	PunchFailures      int64 `json:"punch_failures"`
	// ProtocolErrors are exchanges that never came to a dial: the filter
	// refused, no public address to send, the stream failed.
	ProtocolErrors int64  `json:"protocol_errors"`
	LastError      string `json:"last_error,omitempty"`
}

// Successes is how many of DCUtR's attempts made a direct connection.
func (d DCUtRStats) Successes() int64 { return d.DirectDials + d.PunchSuccesses }

// Stats returns the counts.
func (p *Puncher) Stats() PunchStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PunchStats{Attempts: p.attempts, Successes: p.successes, Refused: p.refused, DCUtR: p.dcutr}
}

// Package choker decides which peers we upload to: tit-for-tat regular
// slots, a rotating optimistic unchoke, anti-snubbing and, like libtorrent's
// rate-based choker, extra slots while our upload capacity goes unused.
//
// A Choker is a deterministic core: it does no I/O, starts no goroutines,
// takes the time as an argument and draws randomness only from the
// *rand.Rand it is given. It is not safe for concurrent use.
package choker

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/peer-overlay/peer/internal/defaults"
)

// Peer is what the choker needs to know of a connected peer.
type Peer struct {
	ID         string
	Interested bool    // it wants pieces from us
	DownRate   float64 // bytes/s it sent us lately
	UpRate     float64 // bytes/s we sent it lately
	LastBlock  int64   // ms timestamp of the last block it sent us (0 = never)
	Connected  int64   // ms timestamp it connected
}

// Config sets the slots and timers; zero fields take the defaults.
type Config struct {
	Slots        int   // regular unchoke slots, default 4
	RoundMs      int64 // re-evaluation period, default 10_000
	OptimisticMs int64 // optimistic unchoke rotation period, default 30_000
	SnubMs       int64 // silence after which an unchoked peer is snubbed, default 60_000
	NewPeerMs    int64 // peers younger than this get 3x weight in the optimistic draw, default 60_000
	// ExtraMs is how often the extra slots follow the spare capacity,
	// between full rounds too (default 1_000): an upload left idle for a
	// whole round is capacity the swarm never gets back.
	ExtraMs int64
	Rand    *rand.Rand
}

// Spare-capacity thresholds of the extra slots.
const (
	growAbove   = 0.1
	shrinkBelow = 0.02
	newWeight   = 3
)

// Choker holds the state carried between rounds.
type Choker struct {
	cfg        Config
	begun      bool
	lastRound  int64
	regular    map[string]bool // regular and extra slots of the previous decision
	optimistic string          // "" when none
	optAt      int64           // when the optimistic peer was drawn
	extra      int             // extra slots beyond cfg.Slots
	lastExtra  int64           // when the extra slots last followed spare
}

// New returns a Choker. It panics if cfg.Rand is nil.
func New(cfg Config) *Choker {
	if cfg.Rand == nil {
		panic("choker: Config.Rand is required")
	}
	if cfg.Slots == 0 {
		cfg.Slots = 4
	}
	cfg.Slots = max(cfg.Slots, 0)
	defaults.Set(&cfg.RoundMs, 10_000)
	defaults.Set(&cfg.OptimisticMs, 30_000)
	defaults.Set(&cfg.SnubMs, 60_000)
	defaults.Set(&cfg.NewPeerMs, 60_000)
	defaults.Set(&cfg.ExtraMs, 1_000)
	return &Choker{cfg: cfg, regular: map[string]bool{}}
}

type cand struct {
	p       *Peer
	rate    float64
	snubbed bool
	prev    bool // held a regular slot in the previous decision
	key     uint64
}

// Decide runs a choking round at now (ms) over the connected peers and
// returns the peers to unchoke; all others are choked. seeding: we have every
// piece. spare: the fraction of upload capacity unused in the last round (0
// when saturated or unknown).
//
// A call at least 90% of RoundMs after the last full round is a full round:
// it ranks every interested peer afresh, adjusts the extra slots and rotates
// the optimistic unchoke when due. An earlier call (a peer came, left or
// changed interest) keeps the previous unchokes that are still interested and
// only fills the slots that fell free.
func (c *Choker) Decide(now int64, peers []Peer, seeding bool, spare float64) map[string]bool {
	slack := c.cfg.RoundMs / 10
	full := !c.begun || now-c.lastRound >= c.cfg.RoundMs-slack

	sorted := slices.Clone(peers)
	slices.SortStableFunc(sorted, func(a, b Peer) int { return strings.Compare(a.ID, b.ID) })
	var cands []cand
	for k := range sorted {
		p := &sorted[k]
		if !p.Interested {
			continue
		}
		cd := cand{p: p, rate: p.DownRate, prev: c.regular[p.ID], key: c.cfg.Rand.Uint64()}
		if seeding {
			cd.rate = p.UpRate
		} else {
			cd.snubbed = c.snubbed(now, p)
		}
		cands = append(cands, cd)
	}
	// Non-snubbed first, then by rate; equal rates keep their slots, then a
	// random order.
	slices.SortFunc(cands, func(a, b cand) int {
		if a.snubbed != b.snubbed {
			if a.snubbed {
				return 1
			}
			return -1
		}
		if r := cmp.Compare(b.rate, a.rate); r != 0 {
			return r
		}
		if a.prev != b.prev {
			if a.prev {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.key, b.key)
	})

	nreg := min(c.cfg.Slots, len(cands))
	if full || now-c.lastExtra >= c.cfg.ExtraMs-c.cfg.ExtraMs/10 {
		c.extra = min(c.extra, len(cands)-nreg)
		rest := len(cands) - nreg - c.extra
		switch {
		case spare > growAbove && rest > 0:
			c.extra += min(rest, max(1, int(math.Ceil(spare*float64(rest)))))
			c.lastExtra = now
		case spare < shrinkBelow && c.extra > 0:
			c.extra--
			c.lastExtra = now
		}
	}
	target := min(nreg+c.extra, len(cands))

	regular := make(map[string]bool, target)
	if full {
		for _, cd := range cands[:target] {
			regular[cd.p.ID] = true
		}
	} else {
		for _, cd := range cands {
			if len(regular) < target && cd.prev {
				regular[cd.p.ID] = true
			}
		}
		for _, cd := range cands {
			if len(regular) < target && !cd.prev && cd.p.ID != c.optimistic {
				regular[cd.p.ID] = true
			}
		}
	}

	var rest []cand
	optValid := false
	for _, cd := range cands {
		if !regular[cd.p.ID] {
			rest = append(rest, cd)
			optValid = optValid || cd.p.ID == c.optimistic
		}
	}
	due := full && now-c.optAt >= c.cfg.OptimisticMs-slack
	if !optValid || due {
		c.draw(now, rest, optValid)
	}

	c.begun = true
	if full {
		c.lastRound = now
	}
	c.regular = regular
	out := make(map[string]bool, len(regular)+1)
	for id := range regular {
		out[id] = true
	}
	if c.optimistic != "" {
		out[c.optimistic] = true
	}
	return out
}

// snubbed reports whether p, unchoked in the previous decision, has sent us
// nothing for SnubMs.
func (c *Choker) snubbed(now int64, p *Peer) bool {
	if !c.regular[p.ID] && p.ID != c.optimistic {
		return false
	}
	if p.LastBlock != 0 {
		return now-p.LastBlock > c.cfg.SnubMs
	}
	return now-p.Connected > c.cfg.SnubMs
}

// draw picks a new optimistic unchoke among rest, new peers weighted 3x. The
// current one is kept only when it is the sole candidate.
func (c *Choker) draw(now int64, rest []cand, keepable bool) {
	pool := rest
	if keepable && len(rest) > 1 {
		pool = slices.DeleteFunc(slices.Clone(rest), func(cd cand) bool { return cd.p.ID == c.optimistic })
	}
	total := 0
	for _, cd := range pool {
		total += c.weight(now, cd.p)
	}
	if total == 0 {
		c.optimistic = ""
		return
	}
	// Draw in ID order so the outcome does not depend on the ranking keys.
	slices.SortFunc(pool, func(a, b cand) int { return strings.Compare(a.p.ID, b.p.ID) })
	r := c.cfg.Rand.IntN(total)
	for _, cd := range pool {
		if r -= c.weight(now, cd.p); r < 0 {
			if cd.p.ID != c.optimistic {
				c.optimistic, c.optAt = cd.p.ID, now
			} else {
				c.optAt = now
			}
			return
		}
	}
}

func (c *Choker) weight(now int64, p *Peer) int {
	if now-p.Connected < c.cfg.NewPeerMs {
		return newWeight
	}
	return 1
}

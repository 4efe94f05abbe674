package tunnel

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Candidate is a provider as the forwarder sees it.
type Candidate struct {
	ID peer.ID
	// Cost is the path's cost for the tunnel's class (RTT in ms for
	// latency, seconds per MiB for throughput); 0 when unmeasured.
	Cost float64
	// Failed is when a tunnel through it last failed (zero: never).
	Failed time.Time
}

// failPenalty is how long a provider that failed goes to the back.
const failPenalty = 30 * time.Second

// Order ranks providers for a new connection at now: those that have not
// failed within failPenalty first, measured ones by cost, unmeasured after
// them, and ties by the rotation r (so that equal providers share the
// load). The result is every candidate, to try in turn. It does no I/O.
func Order(cands []Candidate, now time.Time, r uint64) []peer.ID {
	type ranked struct {
		c      Candidate
		failed bool
		key    uint64
	}
	rs := make([]ranked, len(cands))
	for i, c := range cands {
		rs[i] = ranked{c: c, failed: !c.Failed.IsZero() && now.Sub(c.Failed) < failPenalty,
			key: (uint64(i) + r) % uint64(len(cands))}
	}
	slices.SortStableFunc(rs, func(a, b ranked) int {
		if a.failed != b.failed {
			if a.failed {
				return 1
			}
			return -1
		}
		am, bm := a.c.Cost > 0, b.c.Cost > 0
		if am != bm {
			if am {
				return -1
			}
			return 1
		}
		// Costs in one band (a factor of 1.25 wide) count as equal, so
		// that noise in the measurements does not send everything to
		// one provider.
		if am {
			if c := cmp.Compare(band(a.c.Cost), band(b.c.Cost)); c != 0 {
				return c
			}
		}
		return cmp.Compare(a.key, b.key)
	})
	out := make([]peer.ID, len(rs))
	for i, x := range rs {
		out[i] = x.c.ID
	}
	return out
}

func band(cost float64) int { return int(math.Floor(math.Log(cost) / math.Log(1.25))) }

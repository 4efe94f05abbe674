package distribute

import (
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Policy says whose orders a target carries out: those of the peers in
// Operators, and, in a closed group (whose members trust each other), any
// member's.
type Policy struct {
	Operators []peer.ID
	Closed    bool
}

// Allow returns nil when from may order this peer, else the reason it may
// not, fit to be sent back. member says whether from is a member of the
// group (it only counts in a closed group).
func (p Policy) Allow(from peer.ID, member bool) error {
	if slices.Contains(p.Operators, from) {
		return nil
	}
	if p.Closed {
		if member {
			return nil
		}
		return fmt.Errorf("%s is neither an operator of this peer nor a member of its closed group", from)
	}
	if len(p.Operators) == 0 {
		return fmt.Errorf("this peer takes no orders: it lists no operators and is in no closed group (set operators in its config)")
	}
	return fmt.Errorf("%s is not an operator of this peer (its config's operators lists %d other peers)", from, len(p.Operators))
}

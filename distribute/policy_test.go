package distribute

import (
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newID(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestPolicy(t *testing.T) {
	op, other := newID(t), newID(t)
	for _, c := range []struct {
		name   string
		p      Policy
		from   peer.ID
		member bool
		ok     bool
		reason string
	}{
		{"operator", Policy{Operators: []peer.ID{op}}, op, false, true, ""},
		{"operator, closed group, not a member", Policy{Operators: []peer.ID{op}, Closed: true}, op, false, true, ""},
		{"stranger", Policy{Operators: []peer.ID{op}}, other, true, false, "not an operator"},
		{"no operators", Policy{}, other, true, false, "takes no orders"},
		{"closed group member", Policy{Closed: true}, other, true, true, ""},
		{"closed group outsider", Policy{Closed: true, Operators: []peer.ID{op}}, other, false, false, "nor a member"},
	} {
		err := c.p.Allow(c.from, c.member)
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want allowed %v", c.name, err, c.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%s: reason %q lacks %q", c.name, err, c.reason)
		}
	}
}

package chord

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func peerAt(hi byte, name string) Peer {
	var id ID
	id[0] = hi
	return Peer{ID: id, Name: name}
}

// A node that many peers notify answers each asker's GetState with the
// notifier closest after that asker, not only with its predecessor: a
// crowd that joined through one successor sorts itself in one round.
func TestStateNamesClosestNotifierAfterAsker(t *testing.T) {
	f := New(Config{Self: peerAt(200, "f"), Rand: rand.New(rand.NewPCG(1, 2))})
	f.Create()
	crowd := []Peer{peerAt(10, "a"), peerAt(50, "b"), peerAt(90, "c"), peerAt(150, "d"), peerAt(190, "e")}
	for _, p := range crowd {
		f.Step(Message{Type: MsgNotify, From: p, To: f.Self()})
	}
	if f.Pred() != crowd[4] {
		t.Fatalf("predecessor %v, want %v", f.Pred(), crowd[4])
	}
	for i, asker := range crowd[:4] {
		rep, ok := f.Step(Message{Type: MsgGetState, From: asker, To: f.Self(), Seq: 1})
		if !ok || rep.Type != MsgState {
			t.Fatalf("no state reply: %+v", rep)
		}
		if want := crowd[i+1]; rep.Pred != want {
			t.Errorf("asker %v: told %v, want %v", asker, rep.Pred, want)
		}
	}
	// The predecessor itself, and a stranger after it, hear the
	// predecessor as before.
	for _, asker := range []Peer{crowd[4], peerAt(195, "g")} {
		rep, _ := f.Step(Message{Type: MsgGetState, From: asker, To: f.Self(), Seq: 2})
		if rep.Pred != crowd[4] {
			t.Errorf("asker %v: told %v, want the predecessor %v", asker, rep.Pred, crowd[4])
		}
	}
	// A notifier found dead is no longer offered.
	f.PeerDead(crowd[1])
	rep, _ := f.Step(Message{Type: MsgGetState, From: crowd[0], To: f.Self(), Seq: 3})
	if rep.Pred != crowd[2] {
		t.Errorf("after b died: told %v, want %v", rep.Pred, crowd[2])
	}
	// Notifiers that stop notifying are forgotten after a few rounds.
	for range 3*f.cfg.StabilizeTicks + 1 {
		f.Tick()
	}
	f.Ready()
	rep, _ = f.Step(Message{Type: MsgGetState, From: crowd[0], To: f.Self(), Seq: 4})
	if rep.Pred != crowd[4] {
		t.Errorf("after the notifiers went quiet: told %v, want the predecessor %v", rep.Pred, crowd[4])
	}
}

// The notifier memory is bounded and keeps those closest to the node.
func TestNotifiersBounded(t *testing.T) {
	f := New(Config{Self: peerAt(255, "f"), Rand: rand.New(rand.NewPCG(1, 2))})
	f.Create()
	const n = maxNotifiers + 500
	for i := range n {
		var id ID
		id[0], id[1] = byte(i>>8), byte(i)
		f.Step(Message{Type: MsgNotify, From: Peer{ID: id, Name: fmt.Sprint("p", i)}, To: f.Self()})
	}
	if len(f.notifiers) != maxNotifiers {
		t.Fatalf("%d notifiers remembered, bound is %d", len(f.notifiers), maxNotifiers)
	}
	for _, x := range f.notifiers {
		if i := int(x.p.ID[0])<<8 | int(x.p.ID[1]); i < n-maxNotifiers {
			t.Errorf("kept far notifier %v over closer ones", x.p)
		}
	}
}

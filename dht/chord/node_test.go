package chord

import (
	"fmt"
	"slices"
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
	f := New(Config{Self: peerAt(200, "f")})
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
	f := New(Config{Self: peerAt(255, "f")})
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

// reqTo returns the one request of type t to p among msgs.
func reqTo(t *testing.T, msgs []Message, typ MsgType, p Peer) Message {
	t.Helper()
	for _, m := range msgs {
		if m.Type == typ && m.To == p {
			return m
		}
	}
	t.Fatalf("no %v to %v among %v", typ, p, msgs)
	return Message{}
}

// A peer restarted with its old identity is in no ring yet: it answers a
// GetState with no successor list, a Find with no next hop, and a Ping not
// at all. Its predecessor must not take the empty list for one (that cut
// its list down to the restarted peer alone, and the cut spread round the
// ring): it keeps the rest of its list and asks the next successor at once;
// a joiner that finds it first joins through the next one.
func TestNotMemberAnswers(t *testing.T) {
	b, x, s, u, v := peerAt(10, "b"), peerAt(60, "x"), peerAt(70, "s"), peerAt(80, "u"), peerAt(90, "v")

	// The restarted x, fresh.
	fresh := New(Config{Self: x})
	if _, ok := fresh.Step(Message{Type: MsgPing, From: s, To: x, Seq: 1}); ok {
		t.Error("a node in no ring answered a ping")
	}
	st, ok := fresh.Step(Message{Type: MsgGetState, From: b, To: x, Seq: 2})
	if !ok || st.Type != MsgState || len(st.Nodes) != 0 {
		t.Fatalf("GetState to a node in no ring: %+v, want a State without nodes", st)
	}
	found, _ := fresh.Step(Message{Type: MsgFind, From: b, To: x, Seq: 3, Target: peerAt(100, "").ID})
	if found.Done || len(found.Nodes) != 0 {
		t.Fatalf("Find to a node in no ring: %+v", found)
	}

	// p (at 50) joins through b; the lookup names x as its successor, and
	// x, still fresh, answers the check empty: p goes on to s.
	// (Requests left unanswered here do not time out.)
	p := New(Config{Self: peerAt(50, "p"), RPCTimeoutTicks: 1000})
	p.Join(b)
	find := reqTo(t, p.Ready().Msgs, MsgFind, b)
	p.Step(Message{Type: MsgFound, From: b, To: p.Self(), Seq: find.Seq, Done: true, Nodes: []Peer{x, s, u, v}})
	chk := reqTo(t, p.Ready().Msgs, MsgGetState, x)
	st.Seq, st.To = chk.Seq, p.Self()
	p.Step(st)
	if p.Joined() {
		t.Fatal("joined on an empty state")
	}
	chk = reqTo(t, p.Ready().Msgs, MsgGetState, s)
	p.Step(Message{Type: MsgState, From: s, To: p.Self(), Seq: chk.Seq, Pred: b, Nodes: []Peer{u, v, b}})
	if !p.Joined() {
		t.Fatal("not joined through the next successor")
	}
	p.Ready()

	// Later x has joined and p adopted it as its successor; then x
	// restarts and answers p's stabilize empty.
	for range 2*p.cfg.StabilizeTicks + 1 {
		p.Tick() // x is left out for two rounds only
		for _, m := range p.Ready().Msgs {
			if m.Type == MsgGetState && m.To == s {
				p.Step(Message{Type: MsgState, From: s, To: p.Self(), Seq: m.Seq, Pred: p.Self(), Nodes: []Peer{u, b}})
			}
		}
	}
	p.adopt([]Peer{x, s, u, b})
	if got := p.Successor(); got != x {
		t.Fatalf("successor %v, want %v", got, x)
	}
	p.Ready()
	want := []Peer{s, u, b}
	var gs Message
	for range 2 * p.cfg.StabilizeTicks {
		p.Tick()
		for _, m := range p.Ready().Msgs {
			if m.Type == MsgGetState && m.To == x {
				gs = m
			}
		}
		if gs.Seq != 0 {
			break
		}
	}
	if gs.Seq == 0 {
		t.Fatal("p never asked its successor x for its state")
	}
	p.Step(Message{Type: MsgState, From: x, To: p.Self(), Seq: gs.Seq})
	if got := p.Succs(); !slices.Equal(got, want) {
		t.Fatalf("after x answered empty: successors %v, want %v", got, want)
	}
	reqTo(t, p.Ready().Msgs, MsgGetState, s) // the next successor is asked at once
}

package nat

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

func TestPuncherFollowsThePairPolicy(t *testing.T) {
	kinds := map[peer.ID]Kind{"easy": Easy, "hard": Hard, "pub": Public}
	p := NewPuncher()
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/198.18.1.2/udp/4001/quic-v1")}
	if p.FilterRemote("easy", addrs) != nil || p.Try("easy") {
		t.Fatal("an unbound puncher let a punch through")
	}
	self := Easy
	p.Bind(func() Kind { return self }, func(id peer.ID) Kind { return kinds[id] }, nil)
	// Easy to easy: punches, at most MaxPunches in a window however often
	// DCUtR or the upgrade pass asks.
	allowed := 0
	for range 20 {
		if p.FilterRemote("easy", addrs) != nil {
			allowed++
		}
		if p.Try("easy") {
			allowed++
		}
	}
	if allowed == 0 || allowed > MaxPunches {
		t.Fatalf("%d easy-easy attempts allowed, want 1 to %d", allowed, MaxPunches)
	}
	// Hard to hard: never.
	self = Hard
	for range 5 {
		if p.FilterLocal("hard", addrs) != nil || p.FilterRemote("hard", addrs) != nil || p.Try("hard") {
			t.Fatal("a hard-hard punch was allowed")
		}
	}
	// A remote whose advert has not come: no attempt, and none counted,
	// so that it punches as soon as its advert says easy.
	self = Easy
	for range 5 {
		if p.FilterRemote("new", addrs) != nil || p.Try("new") {
			t.Fatal("a punch to a peer of unknown mapping was allowed")
		}
	}
	kinds["new"] = Easy
	if p.FilterRemote("new", addrs) == nil {
		t.Fatal("no punch once its advert said easy")
	}
	// A public end: a plain dial, spaced out.
	if !p.Try("pub") || p.Try("pub") {
		t.Fatal("a dial to a public peer was not allowed once, then held back")
	}
	p.Outcome("easy", true, nil)
	if !p.Punched("easy") || p.Stats().Successes != 1 {
		t.Fatalf("success not recorded: %+v", p.Stats())
	}
	p.Lost("easy")
	if p.Punched("easy") {
		t.Fatal("a lost direct connection still counts as punched")
	}
}

// DCUtR's events are counted apart from the node's own upgrade dials.
func TestPuncherCountsDCUtREvents(t *testing.T) {
	p := NewPuncher()
	p.Bind(func() Kind { return Easy }, func(peer.ID) Kind { return Easy }, nil)
	p.Outcome("a", true, nil) // our own dial: not DCUtR's
	p.Trace(&holepunch.Event{Remote: "b", Evt: &holepunch.ProtocolErrorEvt{Error: "no public address"}})
	p.Trace(&holepunch.Event{Remote: "b", Evt: &holepunch.DirectDialEvt{Success: false, Error: "timeout"}})
	p.Trace(&holepunch.Event{Remote: "b", Evt: &holepunch.StartHolePunchEvt{}})
	p.Trace(&holepunch.Event{Remote: "b", Evt: &holepunch.EndHolePunchEvt{Success: true}})
	p.Trace(&holepunch.Event{Remote: "c", Evt: &holepunch.DirectDialEvt{Success: true}})
	st := p.Stats()
	want := DCUtRStats{DirectDials: 1, DirectDialFailures: 1, Punches: 1, PunchSuccesses: 1, ProtocolErrors: 1, LastError: "timeout"}
	if st.DCUtR != want || st.DCUtR.Successes() != 2 || st.Successes != 3 {
		t.Fatalf("stats %+v, want DCUtR %+v and 3 successes in all", st, want)
	}
	if !p.Punched("b") || !p.Punched("c") {
		t.Fatal("DCUtR's direct connections not recorded as punched")
	}
}

// DCUtR retries its punch within one exchange (the last try with the
// roles switched): the policy lets those tries through as the one attempt
// it allowed, while our own upgrade dials still wait.
func TestPuncherLetsDCUtRRetryWithinAnExchange(t *testing.T) {
	p := NewPuncher()
	p.Bind(func() Kind { return Easy }, func(peer.ID) Kind { return Easy }, nil)
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/198.18.1.2/udp/4001/quic-v1")}
	for try := 1; try <= dcutrTries; try++ {
		if p.FilterLocal("e", addrs) == nil || p.FilterRemote("e", addrs) == nil {
			t.Fatalf("DCUtR's try %d of one exchange refused", try)
		}
		p.Trace(&holepunch.Event{Remote: "e", Evt: &holepunch.EndHolePunchEvt{Success: false}})
	}
	if p.FilterRemote("e", addrs) != nil {
		t.Fatal("a fourth try passed as the same exchange")
	}
	if p.Try("e") {
		t.Fatal("our own upgrade dial went ahead right after a failed exchange")
	}
	if st := p.Stats(); st.Attempts != 1 {
		t.Fatalf("one exchange counted as %d attempts", st.Attempts)
	}
}

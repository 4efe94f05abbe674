package nat

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func ans(server, mapped string, at time.Duration) Answer {
	return Answer{Server: ap(server), Mapped: ap(mapped), At: t0.Add(at)}
}

var natted = Local{Listen: []netip.AddrPort{ap("198.19.0.5:4001")}}

func TestClassify(t *testing.T) {
	wild := Local{
		Listen:     []netip.AddrPort{ap("0.0.0.0:4001")},
		Interfaces: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.18.0.5"), netip.MustParseAddr("198.18.0.6")},
	}
	public := Local{Listen: []netip.AddrPort{ap("198.18.0.5:4001")}}
	for _, c := range []struct {
		name    string
		local   Local
		answers []Answer
		want    Mapping
	}{
		{"no answers", natted, nil, Mapping{}},
		{"no listen address", Local{}, []Answer{ans("198.18.0.1:4001", "198.18.9.9:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)}, Mapping{}},
		{"one answer", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"one answer, local address", public, []Answer{ans("198.18.0.1:4001", "198.18.0.5:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"two servers on one IP", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:4001", 0), ans("198.18.0.1:4002", "198.18.9.9:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"easy, port preserved", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", time.Second)},
			Mapping{Kind: Easy, Servers: 2, PortPreserved: true, Addr: ap("198.18.9.9:4001")}},
		{"easy, port changed", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:1234", 0), ans("198.18.0.2:4001", "198.18.9.9:1234", 0), ans("198.18.0.3:9", "198.18.9.9:1234", 0)},
			Mapping{Kind: Easy, Servers: 3, Addr: ap("198.18.9.9:1234")}},
		{"hard by port", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:1234", 0), ans("198.18.0.2:4001", "198.18.9.9:1235", 0)},
			Mapping{Kind: Hard, Servers: 2}},
		{"hard by IP, ports preserved", natted, []Answer{ans("198.18.0.1:4001", "198.18.9.9:4001", 0), ans("198.18.0.2:4001", "198.18.9.8:4001", 0)},
			Mapping{Kind: Hard, Servers: 2, PortPreserved: true}},
		{"public", public, []Answer{ans("198.18.0.1:4001", "198.18.0.5:4001", 0), ans("198.18.0.2:4001", "198.18.0.5:4001", 0)},
			Mapping{Kind: Public, Servers: 2, PortPreserved: true, Addr: ap("198.18.0.5:4001")}},
		{"public IP, other port", public, []Answer{ans("198.18.0.1:4001", "198.18.0.5:9999", 0), ans("198.18.0.2:4001", "198.18.0.5:9999", 0)},
			Mapping{Kind: Easy, Servers: 2, Addr: ap("198.18.0.5:9999")}},
		{"unspecified listen, interface address", wild, []Answer{ans("198.18.0.1:4001", "198.18.0.6:4001", 0), ans("198.18.0.2:4001", "198.18.0.6:4001", 0)},
			Mapping{Kind: Public, Servers: 2, PortPreserved: true, Addr: ap("198.18.0.6:4001")}},
		{"unspecified listen, multi-homed", wild, []Answer{ans("198.18.0.1:4001", "198.18.0.6:4001", 0), ans("198.18.0.2:4001", "198.18.0.5:4001", 0), ans("198.18.0.3:4001", "198.18.0.6:4001", 0)},
			Mapping{Kind: Public, Servers: 3, PortPreserved: true, Addr: ap("198.18.0.6:4001")}},
		{"unspecified listen, multi-homed tie", wild, []Answer{ans("198.18.0.1:4001", "198.18.0.6:4001", 0), ans("198.18.0.2:4001", "198.18.0.5:4001", 0)},
			Mapping{Kind: Public, Servers: 2, PortPreserved: true, Addr: ap("198.18.0.5:4001")}},
		{"unspecified listen, not an interface", wild, []Answer{ans("198.18.0.1:4001", "198.18.7.7:4001", 0), ans("198.18.0.2:4001", "198.18.7.7:4001", 0)},
			Mapping{Kind: Easy, Servers: 2, PortPreserved: true, Addr: ap("198.18.7.7:4001")}},
		{"unspecified listen, no interfaces given", Local{Listen: wild.Listen}, []Answer{ans("198.18.0.1:4001", "198.18.0.6:4001", 0), ans("198.18.0.2:4001", "198.18.0.6:4001", 0)},
			Mapping{Kind: Easy, Servers: 2, PortPreserved: true, Addr: ap("198.18.0.6:4001")}},
		{"latest answer per server counts", natted, []Answer{
			ans("198.18.0.1:4001", "198.18.9.9:1111", 0), ans("198.18.0.1:4001", "198.18.9.9:2222", 10*time.Second),
			ans("198.18.0.2:4001", "198.18.9.9:2222", 5*time.Second)},
			Mapping{Kind: Easy, Servers: 2, Addr: ap("198.18.9.9:2222")}},
		{"answers older than the window ignored", natted, []Answer{
			ans("198.18.0.1:4001", "198.18.9.9:1111", 0),
			ans("198.18.0.2:4001", "198.18.9.9:2222", AnswerWindow+time.Second), ans("198.18.0.3:4001", "198.18.9.9:2222", AnswerWindow+time.Second)},
			Mapping{Kind: Easy, Servers: 2, Addr: ap("198.18.9.9:2222")}},
		{"answer at the window's edge counts", natted, []Answer{
			ans("198.18.0.1:4001", "198.18.9.9:1111", 0),
			ans("198.18.0.2:4001", "198.18.9.9:2222", AnswerWindow), ans("198.18.0.3:4001", "198.18.9.9:2222", AnswerWindow)},
			Mapping{Kind: Hard, Servers: 3}},
		{"IPv4-mapped addresses are IPv4", natted, []Answer{ans("[::ffff:198.18.0.1]:4001", "[::ffff:198.18.9.9]:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Easy, Servers: 2, PortPreserved: true, Addr: ap("198.18.9.9:4001")}},
		{"other family ignored", natted, []Answer{ans("[2001:db8::1]:4001", "[2001:db8::9]:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"inconsistent family ignored", natted, []Answer{ans("198.18.0.1:4001", "[2001:db8::9]:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"unusable mapped addresses ignored", natted, []Answer{ans("198.18.0.1:4001", "0.0.0.0:4001", 0), ans("198.18.0.3:4001", "198.18.9.8:0", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Unknown, Servers: 1, PortPreserved: true}},
		{"IPv6 socket", Local{Listen: []netip.AddrPort{ap("[2001:db8::5]:4001")}}, []Answer{ans("[2001:db8::1]:4001", "[2001:db8::5]:4001", 0), ans("[2001:db8::2]:4001", "[2001:db8::5]:4001", 0), ans("198.18.0.2:4001", "198.18.9.9:4001", 0)},
			Mapping{Kind: Public, Servers: 2, PortPreserved: true, Addr: ap("[2001:db8::5]:4001")}},
	} {
		if got := Classify(c.local, c.answers); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestClassifyOrderIndependent(t *testing.T) {
	answers := []Answer{
		ans("198.18.0.1:4001", "198.18.9.9:1111", 0),
		ans("198.18.0.1:4001", "198.18.9.9:2222", 0), // same server, same time, other mapping
		ans("198.18.0.2:4001", "198.18.9.9:2222", 0),
		ans("198.18.0.3:4001", "198.18.9.9:2222", 0),
	}
	want := Classify(natted, answers)
	if want.Kind != Easy {
		t.Fatalf("the tie for server 1 must go to the higher mapping: got %+v", want)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		r.Shuffle(len(answers), func(i, j int) { answers[i], answers[j] = answers[j], answers[i] })
		if got := Classify(natted, answers); got != want {
			t.Fatalf("order %v: got %+v, want %+v", answers, got, want)
		}
	}
}

func TestClassifierHardIsSticky(t *testing.T) {
	c := NewClassifier(natted)
	c.Observe(ans("198.18.0.1:4001", "198.18.9.9:1111", 0))
	if got := c.Result(); got.Kind != Unknown {
		t.Fatalf("after one answer: %+v", got)
	}
	c.Observe(ans("198.18.0.2:4001", "198.18.9.9:2222", time.Second))
	if got := c.Result(); got.Kind != Hard {
		t.Fatalf("after two different mappings: %+v", got)
	}
	// Later every server agrees. Classify alone would now say Easy, the
	// Classifier still says Hard.
	later := []Answer{
		ans("198.18.0.1:4001", "198.18.9.9:3333", time.Hour),
		ans("198.18.0.2:4001", "198.18.9.9:3333", time.Hour),
		ans("198.18.0.3:4001", "198.18.9.9:3333", time.Hour),
	}
	for _, a := range later {
		c.Observe(a)
	}
	if pure := Classify(natted, later); pure.Kind != Easy {
		t.Fatalf("Classify of the later answers: %+v, want easy", pure)
	}
	if got := c.Result(); got.Kind != Hard || got.Addr.IsValid() || got.Servers != 3 {
		t.Fatalf("sticky Hard: got %+v", got)
	}
	// The same local addresses in another order change nothing.
	c.SetLocal(Local{Listen: []netip.AddrPort{ap("198.19.0.5:4001"), ap("198.19.0.5:4001")}})
	if got := c.Result(); got.Kind != Hard {
		t.Fatalf("after SetLocal with the same address: %+v", got)
	}
	// A new local address starts over.
	moved := Local{Listen: []netip.AddrPort{ap("198.19.0.77:4001")}}
	c.SetLocal(moved)
	if got := c.Result(); got != (Mapping{}) {
		t.Fatalf("after a new local address: %+v, want a fresh Unknown", got)
	}
	c.Observe(ans("198.18.0.1:4001", "198.18.9.9:4444", 2*time.Hour))
	c.Observe(ans("198.18.0.2:4001", "198.18.9.9:4444", 2*time.Hour))
	if got := c.Result(); got.Kind != Easy || got.Addr != ap("198.18.9.9:4444") {
		t.Fatalf("after the move: %+v, want easy", got)
	}
}

func TestClassifierIgnoresStaleAnswer(t *testing.T) {
	c := NewClassifier(natted)
	c.Observe(ans("198.18.0.1:4001", "198.18.9.9:2222", 10*time.Second))
	c.Observe(ans("198.18.0.2:4001", "198.18.9.9:2222", 10*time.Second))
	// A delayed answer from server 1's earlier round must not replace the
	// newer one (and make the peer look hard).
	c.Observe(ans("198.18.0.1:4001", "198.18.9.9:1111", 0))
	if got := c.Result(); got.Kind != Easy {
		t.Fatalf("got %+v, want easy", got)
	}
}

// TestClassifierFollowsClassify feeds random answers one by one and checks
// the Classifier against Classify of everything seen so far, with Hard
// made sticky.
func TestClassifierFollowsClassify(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	servers := []string{"198.18.0.1:4001", "198.18.0.2:4001", "198.18.0.3:4001", "198.18.0.3:5000", "[2001:db8::1]:1"}
	mapped := []string{"198.18.9.9:4001", "198.18.9.9:4001", "198.18.9.9:4001", "198.18.9.9:4001", "198.19.0.5:4001", "198.18.9.9:5"}
	hardRuns := 0
	for run := range 300 {
		c := NewClassifier(natted)
		var seen []Answer
		sawHard := false
		at := time.Duration(0)
		for range 12 {
			at += time.Duration(r.IntN(90)-20) * time.Second // sometimes late, out of order
			a := ans(servers[r.IntN(len(servers))], mapped[r.IntN(len(mapped))], at)
			c.Observe(a)
			seen = append(seen, a)
			want := Classify(natted, seen)
			if want.Kind == Hard {
				sawHard = true
			}
			if sawHard {
				want.Kind, want.Addr = Hard, netip.AddrPort{}
			}
			if got := c.Result(); got != want {
				t.Fatalf("run %d after %v: got %+v, want %+v", run, seen, got, want)
			}
		}
		if sawHard {
			hardRuns++
		}
	}
	if hardRuns == 0 || hardRuns == 300 {
		t.Fatalf("%d of 300 runs saw Hard: the test does not exercise both ways", hardRuns)
	}
}

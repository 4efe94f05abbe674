package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func TestCircuitRelay(t *testing.T) {
	relay := "12D3KooWAnBsofU2ASnqwe6Ghv8yHjm4iPFPCFwThzJHTojt88K5"
	want, err := peer.Decode(relay)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"/ip4/198.18.1.2/tcp/4001/p2p/" + relay + "/p2p-circuit", true},
		{"/ip4/198.18.1.2/udp/4001/quic-v1/p2p/" + relay + "/p2p-circuit/p2p/12D3KooWARpjPEX7vGezACMqEMvQzio3r7wrTvMcyYyt5wxLDBa5", true},
		{"/ip4/198.18.1.2/tcp/4001/p2p/" + relay, false},
		{"/ip4/198.18.1.2/tcp/4001", false},
		{"/p2p-circuit", false},
	} {
		got, ok := circuitRelay(ma.StringCast(tc.addr))
		if ok != tc.ok || (ok && got != want) {
			t.Errorf("%s: relay %s, %v; want %v", tc.addr, got, ok, tc.ok)
		}
	}
}

func TestFirstConnsUpgrade(t *testing.T) {
	var f firstConns
	t0 := time.Now()
	a, b, c, d := peer.ID("a"), peer.ID("b"), peer.ID("c"), peer.ID("d")
	f.seen(a, true, t0)
	f.seen(a, true, t0.Add(time.Second)) // only the first counts
	f.seen(a, false, t0.Add(1500*time.Millisecond))
	f.seen(b, false, t0)
	f.seen(b, true, t0.Add(time.Second)) // direct first
	f.seen(c, true, t0)                  // never direct
	for p, want := range map[peer.ID]float64{a: 1.5, b: 0, c: -1, d: -1} {
		if got := f.upgrade(p); got != want {
			t.Errorf("upgrade(%s) = %v, want %v", p, got, want)
		}
	}
}

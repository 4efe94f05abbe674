package node

import (
	"testing"

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

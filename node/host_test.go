package node

import (
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/swarm/wire"
)

func mustMA(t *testing.T, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestShareFreePortGivesTCPAndUDPOnePort(t *testing.T) {
	in := []ma.Multiaddr{mustMA(t, "/ip4/127.0.0.1/tcp/0"), mustMA(t, "/ip4/127.0.0.1/udp/0/quic-v1")}
	out, err := shareFreePort(in)
	if err != nil {
		t.Fatal(err)
	}
	_, p1, _ := bindTargetOf(out[0])
	_, p2, _ := bindTargetOf(out[1])
	if p1 == 0 || p1 != p2 {
		t.Fatalf("ports %d and %d; want one non-zero port: %v", p1, p2, out)
	}
	if _, err := out[1].ValueForProtocol(ma.P_QUIC_V1); err != nil {
		t.Fatalf("quic-v1 lost: %s", out[1])
	}
}

func TestFirstTakenSeesABoundPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	taken := mustMA(t, "/ip4/127.0.0.1/tcp/"+port)
	if a, ok := firstTaken([]ma.Multiaddr{mustMA(t, "/ip4/127.0.0.1/udp/0/quic-v1"), taken}); !ok || !a.Equal(taken) {
		t.Fatalf("got %v, %v; want %s", a, ok, taken)
	}
}

func TestWithListenPort(t *testing.T) {
	got := WithListenPort([]string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "junk"}, 5000)
	want := []string{"/ip4/0.0.0.0/tcp/5000", "/ip4/0.0.0.0/udp/5000/quic-v1", "junk"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: got %s, want %s", i, got[i], want[i])
		}
	}
}

func TestTCPFirstRanker(t *testing.T) {
	tcp := mustMA(t, "/ip4/198.18.0.1/tcp/4001")
	quic := mustMA(t, "/ip4/198.18.0.1/udp/4001/quic-v1")
	delays := map[string]time.Duration{}
	for _, r := range tcpFirstRanker([]ma.Multiaddr{quic, tcp}) {
		delays[r.Addr.String()] = r.Delay
	}
	if delays[tcp.String()] != 0 {
		t.Errorf("TCP delay %v, want 0", delays[tcp.String()])
	}
	if delays[quic.String()] < quicFallbackDelay {
		t.Errorf("QUIC delay %v, want at least %v", delays[quic.String()], quicFallbackDelay)
	}
	// QUIC alone is dialled without waiting.
	for _, r := range tcpFirstRanker([]ma.Multiaddr{quic}) {
		if r.Delay != 0 {
			t.Errorf("QUIC-only delay %v, want 0", r.Delay)
		}
	}
	// So is a QUIC address with no TCP of its IP beside it: an easy-NAT
	// peer's STUN-mapped address next to its inside TCP address.
	inside := mustMA(t, "/ip4/198.19.1.2/tcp/4001")
	mapped := mustMA(t, "/ip4/198.18.5.2/udp/4001/quic-v1")
	for _, r := range tcpFirstRanker([]ma.Multiaddr{mapped, inside}) {
		if r.Addr.Equal(mapped) && r.Delay != 0 {
			t.Errorf("mapped QUIC delay %v, want 0", r.Delay)
		}
	}
}

// The stream handlers reserve what they buffer from the stream's scope: a
// Chord request (its frame, at most 4 MiB, and a 4 KiB read buffer) and a
// swarm connection's reader. Whatever the budget, one stream may hold the
// largest of them, and one peer's streams of one protocol the largest
// Chord request.
func TestHostLimitsLeaveRoomForStreamReservations(t *testing.T) {
	const chordRequest = 4<<20 + 4<<10
	swarmReader := wire.ReaderMemory(0)
	for _, budget := range []int64{128 << 20, 256 << 20, 1 << 30} {
		l := hostLimits(budget, 512).ToPartialLimitConfig()
		if stream := int64(l.Stream.Memory); stream < max(chordRequest, int64(swarmReader)) {
			t.Errorf("budget %d MiB: a stream may hold %d bytes, less than a handler reserves", budget>>20, stream)
		}
		if pp := int64(l.ProtocolPeerDefault.Memory); pp < chordRequest {
			t.Errorf("budget %d MiB: one peer's streams of a protocol may hold %d bytes, less than a Chord request", budget>>20, pp)
		}
	}
}

// unbound names a listen address the host does not hold, which is how
// newHost notices a transport that lost its picked port to another
// process (libp2p starts if any one address binds).
func TestUnboundListenAddress(t *testing.T) {
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	h, _, err := newHost(sk, cfg, &hostHooks{punch: nat.NewPuncher()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	listen := h.Network().ListenAddresses()
	if a, ok := unbound(h, listen); !ok {
		t.Fatalf("%s reported unbound on the host that listens on it", a)
	}
	var tcpPort int
	for _, a := range listen {
		if bt, p, ok := bindTargetOf(a); ok && bt.network == "tcp" {
			tcpPort = p
		}
	}
	if tcpPort == 0 {
		t.Fatalf("the host has no TCP listener: %v", listen)
	}
	other := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", tcpPort+1))
	if a, ok := unbound(h, append(listen, other)); ok || !a.Equal(other) {
		t.Fatalf("unbound = %v, %v; want %s missing", a, ok, other)
	}
}

package overlay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/security/noise"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/overlay/onehop/wire"
)

const echoProto = "/test/echo/1.0.0"

// seen is what the echo handler learned of a stream.
type seen struct {
	remote peer.ID
	via    peer.ID
}

// group starts n members with routers, joined and agreed on the group,
// each serving an echo protocol that reports who it served.
func group(t *testing.T, n int, gaters ...*p2phost.CutGater) ([]host.Host, []*Router, chan seen) {
	t.Helper()
	served := make(chan seen, 64)
	var hosts []host.Host
	var ms []*Membership
	var rs []*Router
	for i := range n {
		opts := append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if i < len(gaters) && gaters[i] != nil {
			opts = append(opts, libp2p.ConnectionGater(gaters[i]))
		}
		h, err := libp2p.New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		m, err := NewMembership(h, MembershipConfig{tune: fastTiming})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		r := NewRouter(h, m, RouterConfig{})
		t.Cleanup(r.Close)
		h.SetStreamHandler(echoProto, func(s network.Stream) {
			defer s.Close()
			served <- seen{s.Conn().RemotePeer(), ViaOf(s)}
			_, _ = io.Copy(s, s)
		})
		hosts, ms, rs = append(hosts, h), append(ms, m), append(rs, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range ms[1:] {
		if _, err := m.Join(ctx, []peer.AddrInfo{{ID: hosts[0].ID(), Addrs: hosts[0].Addrs()}}); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Until(t, 10*time.Second, func() error {
		for i, r := range rs {
			for j, h := range hosts {
				if i != j && !r.member(h.ID()) {
					return errors.New("routers do not all see the whole group yet")
				}
			}
		}
		return nil
	})
	return hosts, rs, served
}

func echo(t *testing.T, s network.Stream, msg string) {
	t.Helper()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != msg {
		t.Fatalf("echo: %q, want %q", got, msg)
	}
}

func TestForwardedStreamIsSecuredEndToEnd(t *testing.T) {
	hosts, rs, served := group(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := rs[0].OpenVia(ctx, b.ID(), c.ID(), echoProto)
	if err != nil {
		t.Fatal(err)
	}
	if s.Conn().RemotePeer() != c.ID() || ViaOf(s) != b.ID() || s.Protocol() != echoProto {
		t.Fatalf("stream reports remote %s via %s protocol %s", s.Conn().RemotePeer(), ViaOf(s), s.Protocol())
	}
	big := strings.Repeat("through b, ", 50000) // well past one Noise frame
	echo(t, s, big)
	got := <-served
	if got.remote != a.ID() || got.via != b.ID() {
		t.Fatalf("c served a stream from %s via %s, want from a via b", got.remote, got.via)
	}
	if f := rs[1].Forwarded(); f.Spliced != 1 {
		t.Fatalf("b forwarded %d streams, want 1", f.Spliced)
	}
	if f := rs[2].Forwarded(); f.Accepted != 1 {
		t.Fatalf("c accepted %d forwarded streams, want 1", f.Accepted)
	}
}

func TestForwardingRefusals(t *testing.T) {
	hosts, rs, _ := group(t, 3)
	a, b, c := hosts[0], hosts[1], hosts[2]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A peer outside the group: b will not forward for it.
	stranger, sm := newTestMember(t)
	sr := NewRouter(stranger, sm, RouterConfig{})
	defer sr.Close()
	stranger.Peerstore().AddAddrs(b.ID(), b.Addrs(), time.Hour)
	_, err := sr.OpenVia(ctx, b.ID(), c.ID(), echoProto)
	var ref *wire.RefusedError
	if !errors.As(err, &ref) || !strings.Contains(ref.Reason, "not a member") {
		t.Fatalf("a non-member's request: %v, want refused as not a member", err)
	}
	// Nor to a peer outside the group.
	a.Peerstore().AddAddrs(stranger.ID(), stranger.Addrs(), time.Hour)
	if _, err := rs[0].OpenVia(ctx, b.ID(), stranger.ID(), echoProto); !errors.As(err, &ref) {
		t.Fatalf("forwarding to a non-member: %v, want refused", err)
	}
	// A loop: a forwarded stream asking to be forwarded again.
	s, err := rs[0].OpenVia(ctx, b.ID(), c.ID(), wire.FwdProtocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write(wire.AppendFwdHeader(nil, b.ID())); err != nil {
		t.Fatal(err)
	}
	if err := wire.ReadStatus(s); !errors.As(err, &ref) || !strings.Contains(ref.Reason, "not forwarded again") {
		t.Fatalf("a twice-forwarded request: %v, want refused", err)
	}
	s.Reset()
	accepted := rs[2].Forwarded().Accepted
	// An intermediate that claims a stream comes from a, but cannot prove
	// it: b itself writes the header and runs the handshake with its key.
	st, err := b.NewStream(ctx, c.ID(), wire.FwdInProtocol)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write(wire.AppendFwdHeader(nil, a.ID())); err != nil {
		t.Fatal(err)
	}
	if err := wire.ReadStatus(st); err != nil {
		t.Fatal(err)
	}
	tr, err := noise.New(noise.ID, b.Peerstore().PrivKey(b.ID()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sc, err := tr.SecureOutbound(ctx, streamConn{Stream: st}, c.ID()); err == nil {
		// The responder checks the initiator's identity last; what it
		// does then is drop the stream, so nothing is ever served.
		_ = sc.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := bufio.NewReader(sc).ReadByte(); err == nil {
			t.Fatal("c accepted a stream b forged as a's")
		}
	}
	if f := rs[2].Forwarded(); f.Accepted != accepted {
		t.Fatalf("c accepted %d forwarded streams after the forged one, want %d", f.Accepted, accepted)
	}
}

// With the direct link between a and c cut, OpenStream reaches c through
// b at once, path choice moves the route there, and once the link heals
// the route comes back to the direct path.
func TestOpenStreamRoutesAroundACut(t *testing.T) {
	ga, gc := &p2phost.CutGater{}, &p2phost.CutGater{}
	hosts, rs, served := group(t, 3, ga, nil, gc)
	a, b, c := hosts[0], hosts[1], hosts[2]
	ov := New(a, nil, rs[0])
	// Settled: a measures its links to b and c, and knows b's row (the
	// one-hop path to c through b).
	testwait.Until(t, 10*time.Second, func() error {
		routes := rs[0].Routes()
		if len(routes) != 2 {
			return fmt.Errorf("a routes to %d members", len(routes))
		}
		for _, ri := range routes {
			if ri.Direct.RTTms <= 0 || ri.Direct.Down || ri.Paths != 1 {
				return fmt.Errorf("a's route to %s not settled: %+v", ri.Peer, ri)
			}
		}
		if p := rs[0].Route(c.ID(), ClassDefault); !p.OK || p.Via != "" {
			return fmt.Errorf("route to c before the cut: %+v", p)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := ov.OpenStream(ctx, c.ID(), echoProto, ClassLatency)
	if err != nil {
		t.Fatal(err)
	}
	if ViaOf(s) != "" {
		t.Fatalf("stream before the cut went via %s", ViaOf(s))
	}
	echo(t, s, "direct")
	<-served

	ga.Cut(c.ID(), true)
	gc.Cut(a.ID(), true)
	_ = a.Network().ClosePeer(c.ID())
	s, err = ov.OpenStream(ctx, c.ID(), echoProto, ClassLatency)
	if err != nil {
		t.Fatal(err)
	}
	if ViaOf(s) != b.ID() {
		t.Fatalf("stream after the cut went via %q, want b", ViaOf(s))
	}
	echo(t, s, "around the cut")
	if got := <-served; got.remote != a.ID() || got.via != b.ID() {
		t.Fatalf("c served %+v, want a via b", got)
	}
	testwait.Until(t, 10*time.Second, func() error {
		if p := rs[0].Route(c.ID(), ClassLatency); p.Via != b.ID() {
			return fmt.Errorf("route to c after the cut: %+v, want via b", p)
		}
		return nil
	})

	ga.Cut(c.ID(), false)
	gc.Cut(a.ID(), false)
	testwait.Until(t, 20*time.Second, func() error {
		if p := rs[0].Route(c.ID(), ClassLatency); p.Via != "" || !p.OK {
			return fmt.Errorf("route to c after the heal: %+v, want direct", p)
		}
		return nil
	})
	s, err = ov.OpenStream(ctx, c.ID(), echoProto, ClassLatency)
	if err != nil {
		t.Fatal(err)
	}
	if ViaOf(s) != "" {
		t.Fatalf("stream after the heal went via %s", ViaOf(s))
	}
	echo(t, s, "direct again")
}

package p2phost

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// A handler's reservation is held against the stream's limits, refused
// beyond them with an error that names the stream, and given back.
func TestReserveIsBoundedByTheStreamScope(t *testing.T) {
	limits := rcmgr.PartialLimitConfig{
		Stream:          rcmgr.ResourceLimits{Memory: 64 << 10},
		ProtocolDefault: rcmgr.ResourceLimits{Memory: 1 << 20},
	}.Build(rcmgr.DefaultLimits.AutoScale())
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), rcmgr.WithMetricsDisabled())
	if err != nil {
		t.Fatal(err)
	}
	server, err := libp2p.New(append(Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(rm))...)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(server, 5*time.Second)
	client, err := libp2p.New(append(Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(client, 5*time.Second)

	type result struct{ errs []error }
	got := make(chan result, 1)
	server.SetStreamHandler("/test/reserve", func(s network.Stream) {
		defer s.Reset()
		var r result
		free, err := Reserve(s, 48<<10)
		r.errs = append(r.errs, err)
		_, err = Reserve(s, 48<<10) // 96 KiB held: over the 64 KiB limit
		r.errs = append(r.errs, err)
		free()
		free() // twice is harmless
		free2, err := Reserve(s, 48<<10)
		r.errs = append(r.errs, err)
		free2()
		got <- r
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	s, err := client.NewStream(ctx, server.ID(), "/test/reserve")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	_, _ = s.Write([]byte("x"))
	var r result
	select {
	case r = <-got:
	case <-ctx.Done():
		t.Fatal("the handler did not run")
	}
	if r.errs[0] != nil {
		t.Fatalf("first reservation refused: %v", r.errs[0])
	}
	if r.errs[1] == nil || !strings.Contains(r.errs[1].Error(), "/test/reserve") {
		t.Fatalf("reservation over the stream limit: %v; want a refusal naming the protocol", r.errs[1])
	}
	if r.errs[2] != nil {
		t.Fatalf("reservation after release refused: %v", r.errs[2])
	}
}

package dht

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
)

// handleStream reserves the read buffer and the announced frame before it
// reads the frame: a frame that fits the stream's memory limit is read
// (and here refused as junk), one byte more and the stream is dropped
// unread, with the reason logged.
func TestHandleStreamReservesTheFrame(t *testing.T) {
	const frame = 100
	limit := bufio.NewReader(nil).Size() + frame
	limits := rcmgr.PartialLimitConfig{
		Stream: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(limit)},
	}.Build(rcmgr.DefaultLimits.AutoScale())
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), rcmgr.WithMetricsDisabled())
	if err != nil {
		t.Fatal(err)
	}
	server, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.ResourceManager(rm))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p2phost.Close(server, 5*time.Second)
	client, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer p2phost.Close(client, 5*time.Second)
	var log testwait.LogBuffer
	d := &DHT{log: slog.New(slog.NewTextHandler(&log, nil)), badPeers: make(map[peer.ID]bool)}
	server.SetStreamHandler(Protocol, d.handleStream)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.Connect(ctx, peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		s, err := client.NewStream(ctx, server.ID(), Protocol)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		b := binary.AppendUvarint(nil, uint64(n))
		_, _ = s.Write(append(b, make([]byte, n)...))
		_ = s.CloseWrite()
		_, _ = s.Read(make([]byte, 1)) // until the handler is done with it
	}
	waitLog := func(want string) {
		testwait.Until(t, 10*time.Second, func() error {
			if !strings.Contains(log.String(), want) {
				return fmt.Errorf("the log does not say %q:\n%s", want, log.String())
			}
			return nil
		})
	}
	send(frame)
	waitLog("refused a message")
	if strings.Contains(log.String(), "dropped a stream") {
		t.Fatalf("a frame within the limit was dropped:\n%s", log.String())
	}
	send(frame + 1)
	waitLog("dropped a stream: no memory for its request")
}

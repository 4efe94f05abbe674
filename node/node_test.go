package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/testwait"
)

func startTestNode(t *testing.T, home string, bootstrap ...string) *Node {
	t.Helper()
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.Bootstrap = bootstrap
	n, err := Start(home, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(0) })
	return n
}

func TestControlAPIAndJoin(t *testing.T) {
	dir := t.TempDir()
	a := startTestNode(t, filepath.Join(dir, "a"))
	b := startTestNode(t, filepath.Join(dir, "b"), a.Addrs()[0])
	ctx := context.Background()

	ca, err := NewClient(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id.ID != a.ID().String() || len(id.Addrs) == 0 {
		t.Fatalf("id: %+v", id)
	}
	for _, addr := range id.Addrs {
		if !strings.HasSuffix(addr, "/p2p/"+id.ID) {
			t.Errorf("address %s does not end in /p2p/<id>", addr)
		}
	}
	testwait.Until(t, 20*time.Second, func() error {
		ms, err := ca.Members(ctx)
		if err != nil {
			return err
		}
		if len(ms.Members) == 2 && ms.Members[0].State == "alive" && ms.Members[1].State == "alive" {
			return nil
		}
		return fmt.Errorf("a never saw b: %+v", ms)
	})
	st, err := ca.Status(ctx)
	if err != nil || st.Members != 2 || st.Version != Version || st.PID != os.Getpid() {
		t.Fatalf("status: %+v, %v", st, err)
	}
	// The process figures are this test process's own.
	if st.Goroutines < 10 || st.HeapBytes == 0 || runtime.GOOS == "linux" && st.RSSBytes < 1<<20 {
		t.Fatalf("status process figures: %d goroutines, heap %d B, RSS %d B", st.Goroutines, st.HeapBytes, st.RSSBytes)
	}
	_ = b

	// The token is required.
	bad := *ca
	bad.ep.Token = "wrong"
	if _, err := bad.Status(ctx); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("wrong token: got %v", err)
	}
}

func TestSecondNodeOnHomeRefused(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	startTestNode(t, home)
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	if _, err := Start(home, cfg, nil); !errors.Is(err, ErrHomeInUse) {
		t.Fatalf("got %v, want ErrHomeInUse", err)
	}
}

func TestClientWithoutDaemon(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	n := startTestNode(t, home)
	c, err := NewClient(home)
	if err != nil {
		t.Fatal(err)
	}
	n.Close(0)
	if _, err := c.Status(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("after close: got %v, want ErrNotRunning", err)
	}
	if _, err := NewClient(home); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("new client after close: got %v, want ErrNotRunning", err)
	}
}

package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/overlay"
)

func writeKeyFile(t *testing.T, path string, keys ...[]byte) {
	t.Helper()
	if err := os.WriteFile(path, marshalClusterKeys(keys), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startKeyedNode starts a peer whose config names keyFile, logging into
// the returned buffer.
func startKeyedNode(t *testing.T, home, keyFile string, bootstrap ...string) (*Node, *testwait.LogBuffer) {
	t.Helper()
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Bootstrap = bootstrap
	cfg.ClusterKey = keyFile
	logs := &testwait.LogBuffer{}
	n, err := Start(home, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(0) })
	return n, logs
}

func TestClosedGroupServesMembersOnly(t *testing.T) {
	dir := t.TempDir()
	good, wrong := filepath.Join(dir, "good.key"), filepath.Join(dir, "wrong.key")
	writeKeyFile(t, good, NewClusterKey())
	writeKeyFile(t, wrong, NewClusterKey())
	// The key path is relative to the home here.
	if _, err := InitHome(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(good, filepath.Join(dir, "a", "cluster.key")); err != nil {
		t.Fatal(err)
	}
	a, alog := startKeyedNode(t, filepath.Join(dir, "a"), "cluster.key")
	b, _ := startKeyedNode(t, filepath.Join(dir, "b"), good, a.Addrs()[0])
	w, wlog := startKeyedNode(t, filepath.Join(dir, "w"), wrong, a.Addrs()[0])
	if !a.ClosedGroup() || !b.ClosedGroup() || !w.ClosedGroup() {
		t.Fatal("a peer with a cluster key does not run a closed group")
	}
	testwait.Until(t, 20*time.Second, func() error {
		if !a.IsMember(b.ID()) || !b.IsMember(a.ID()) {
			return errors.New("a and b do not see each other")
		}
		return nil
	})
	testwait.Until(t, 20*time.Second, func() error {
		if !strings.Contains(wlog.String(), "join failed: the group is closed and this peer's cluster key does not match") {
			return errors.New("the peer with the wrong key has not logged why it cannot join")
		}
		return nil
	})
	for _, n := range []*Node{a, b} {
		for _, m := range n.members.Members() {
			if m.ID == w.ID() {
				t.Fatalf("%s knows the peer with the wrong key as %s", n.ID(), m.State)
			}
		}
	}
	if w.members.NumAlive() != 1 {
		t.Fatalf("the peer with the wrong key sees %d alive", w.members.NumAlive())
	}

	// Members are served: b pings a over the overlay.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.Overlay().Ping(ctx, a.ID()); err != nil {
		t.Fatalf("a member's ping: %v", err)
	}

	// A stranger connected directly gets nothing: not the ring, not ping.
	stranger, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	var addrs []ma.Multiaddr
	for _, s := range a.Addrs() {
		m, err := ma.NewMultiaddr(strings.TrimSuffix(s, "/p2p/"+a.ID().String()))
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, m)
	}
	if err := stranger.Connect(ctx, peer.AddrInfo{ID: a.ID(), Addrs: addrs}); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []protocol.ID{dht.Protocol, overlay.PingProtocol} {
		s, err := stranger.NewStream(ctx, a.ID(), proto)
		if err != nil {
			continue // refused at negotiation: refused all the same
		}
		// An open group's ping echoes these bytes; a closed group resets.
		_, _ = s.Write(bytes.Repeat([]byte{7}, 32))
		_ = s.SetReadDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 32)
		n, err := io.ReadFull(s, buf)
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: a stranger's stream got %d bytes back, err %v; want a reset", proto, n, err)
		}
		_ = s.Reset()
	}
	testwait.Until(t, 10*time.Second, func() error {
		line := "refused a stream from a peer that is not a member of this closed group"
		logs := alog.String()
		// The first refusal (the ring's protocol) is the one logged.
		if !strings.Contains(logs, line) || !strings.Contains(logs, stranger.ID().String()) || !strings.Contains(logs, "protocol="+string(dht.Protocol)) {
			return fmt.Errorf("a has not logged the refusal of %s", stranger.ID())
		}
		if c := strings.Count(logs, line); c != 1 {
			return fmt.Errorf("a logged the refusal %d times within a minute, want once", c)
		}
		return nil
	})
	// Members still work after the stranger: b's ring sees a.
	if _, err := b.Overlay().Ping(ctx, a.ID()); err != nil {
		t.Fatalf("a member's ping after the stranger: %v", err)
	}
}

func TestOpenGroupServesAnyone(t *testing.T) {
	dir := t.TempDir()
	a := startTestNode(t, filepath.Join(dir, "a"))
	if a.ClosedGroup() {
		t.Fatal("a peer without a key runs a closed group")
	}
	stranger, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ai, err := peer.AddrInfoFromString(a.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := stranger.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	s, err := stranger.NewStream(ctx, a.ID(), overlay.PingProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := bytes.Repeat([]byte{7}, 32)
	if _, err := s.Write(want); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(15 * time.Second))
	got := make([]byte, 32)
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("an open group's ping did not echo: %v", err)
	}
}

func TestClusterKeyRotationThroughTheAPI(t *testing.T) {
	dir := t.TempDir()
	old := NewClusterKey()
	var nodes []*Node
	var clients []*Client
	for i := range 3 {
		home := filepath.Join(dir, fmt.Sprintf("p%d", i))
		if _, err := InitHome(home); err != nil {
			t.Fatal(err)
		}
		kf := filepath.Join(home, "cluster.key")
		writeKeyFile(t, kf, old)
		var boot []string
		if i > 0 {
			boot = []string{nodes[0].Addrs()[0]}
		}
		n, _ := startKeyedNode(t, home, kf, boot...)
		c, err := NewClient(home)
		if err != nil {
			t.Fatal(err)
		}
		nodes, clients = append(nodes, n), append(clients, c)
	}
	whole := func() error {
		for i, n := range nodes {
			for _, o := range nodes {
				if o != n && !n.IsMember(o.ID()) {
					return fmt.Errorf("peer %d does not see %s alive", i, o.ID())
				}
			}
		}
		return nil
	}
	testwait.Until(t, 30*time.Second, whole)
	var failedMu sync.Mutex
	var failed []string
	for _, n := range nodes {
		ch, cancel := n.members.Subscribe()
		defer cancel()
		go func() {
			for ev := range ch {
				if ev.Kind == overlay.EventFailed || ev.Kind == overlay.EventLeft {
					failedMu.Lock()
					failed = append(failed, ev.Member.ID.String())
					failedMu.Unlock()
				}
			}
		}()
	}
	ctx := context.Background()
	next := NewClusterKey()
	nextB64 := EncodeClusterKey(next)
	step := func(op, key string) {
		t.Helper()
		for i, c := range clients {
			info, err := c.ChangeClusterKey(ctx, op, key)
			if err != nil {
				t.Fatalf("peer %d: %s: %v", i, op, err)
			}
			for _, k := range info.Keys {
				if strings.Contains(k.Fingerprint, nextB64) || strings.Contains(k.Fingerprint, EncodeClusterKey(old)) {
					t.Fatal("the API gave a key away")
				}
			}
		}
		// Every member still completes a full sync with every other one.
		for i, n := range nodes {
			for j, o := range nodes {
				if i == j {
					continue
				}
				jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := n.members.Join(jctx, []peer.AddrInfo{{ID: o.ID(), Addrs: o.host.Addrs()}})
				cancel()
				if err != nil {
					t.Fatalf("after %s: peer %d cannot sync with peer %d: %v", op, i, j, err)
				}
			}
		}
		if err := whole(); err != nil {
			t.Fatalf("after %s: %v", op, err)
		}
	}
	step("add", nextB64)
	step("use", nextB64)
	// The primary cannot go.
	if _, err := clients[0].ChangeClusterKey(ctx, "remove", nextB64); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("removing the primary: %v", err)
	}
	step("remove", overlay.KeyFingerprint(old))
	for i, n := range nodes {
		keys, _, err := LoadClusterKeys(n.keyPath)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 || !bytes.Equal(keys[0], next) {
			t.Fatalf("peer %d's key file after rotation holds %d keys, the new one first: %v", i, len(keys), len(keys) > 0 && bytes.Equal(keys[0], next))
		}
		info, err := os.Stat(n.keyPath)
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("peer %d's key file mode: %v %v", i, info.Mode(), err)
		}
	}
	list, err := clients[1].ClusterKeys(ctx)
	if err != nil || list.Group != "closed" || len(list.Keys) != 1 || !list.Keys[0].Primary || list.Keys[0].Fingerprint != overlay.KeyFingerprint(next) {
		t.Fatalf("list after rotation: %+v %v", list, err)
	}
	st, err := clients[2].Status(ctx)
	if err != nil || st.Group != "closed" {
		t.Fatalf("status group: %+v %v", st.Group, err)
	}

	// A peer holding only the old key is out.
	home := filepath.Join(dir, "stale")
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(home, "cluster.key")
	writeKeyFile(t, kf, old)
	_, stalelog := startKeyedNode(t, home, kf, nodes[1].Addrs()[0])
	testwait.Until(t, 20*time.Second, func() error {
		if !strings.Contains(stalelog.String(), "join failed: the group is closed and this peer's cluster key does not match") {
			return errors.New("the stale peer has not failed to join yet")
		}
		return nil
	})
	if err := whole(); err != nil {
		t.Fatal(err)
	}
	failedMu.Lock()
	defer failedMu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("members failed or left during the rotation: %v", failed)
	}
}

func TestClusterKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := EncodeClusterKey(NewClusterKey())
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.key"), "does not exist"},
		{"short", write("short.key", EncodeClusterKey(make([]byte, 16))+"\n", 0o600), "a key of 16 bytes; a cluster key is 32 bytes"},
		{"hex", write("hex.key", strings.Repeat("ab", 32)+"\n", 0o600), "line 1: looks like hex"},
		{"not base64", write("bad.key", "# a comment\nnot!base64?\n", 0o600), "line 2: not base64"},
		{"empty", write("empty.key", "# nothing here\n\n", 0o600), "holds no key"},
		{"twice", write("twice.key", good+"\n"+good+"\n", 0o600), "line 2: the same key twice"},
		{"a directory", dir, "is a directory"},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		cfg.ClusterKey = c.path
		err := cfg.Validate()
		if err == nil || !errors.Is(err, ErrClusterKeyFile) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "cluster_key") {
			t.Errorf("%s: Validate gave %v, want an error saying %q", c.name, err, c.want)
		}
	}
	// A relative path is read at start, from the home.
	home := filepath.Join(dir, "home")
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.ClusterKey = "missing.key"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a relative path is checked at start, not by Validate: %v", err)
	}
	if _, err := Start(home, cfg, nil); err == nil || !strings.Contains(err.Error(), filepath.Join(home, "missing.key")+": does not exist") {
		t.Fatalf("Start with a missing relative key file: %v", err)
	}
	// World-readable loads, with a warning.
	open := write("open.key", good+"\n", 0o644)
	keys, warning, err := LoadClusterKeys(open)
	if err != nil || len(keys) != 1 || !strings.Contains(warning, "can be read by other users") {
		t.Fatalf("a world-readable key file: %d keys, warning %q, err %v", len(keys), warning, err)
	}
	if _, warning, _ := LoadClusterKeys(write("closed.key", good+"\n", 0o600)); warning != "" {
		t.Fatalf("a 0600 key file warns: %q", warning)
	}
	// keygen's file: 0600, one key, never replaced.
	made := filepath.Join(dir, "made.key")
	if err := WriteNewClusterKeyFile(made); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(made); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("a new key file's mode: %v %v", info.Mode(), err)
	}
	if keys, _, err := LoadClusterKeys(made); err != nil || len(keys) != 1 {
		t.Fatalf("a new key file: %d keys, %v", len(keys), err)
	}
	if err := WriteNewClusterKeyFile(made); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("a second keygen on the same file: %v", err)
	}
}

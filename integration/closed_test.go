package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/node"
)

// A closed group of three real peers keeps out a fourth with another key,
// which says why in its log; a bare libp2p host connected to a member gets
// its ring stream reset; and the group rotates to a new key with no member
// lost, after which a peer with only the old key cannot join.
func TestClosedGroup(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	good, wrong := filepath.Join(keys, "good.key"), filepath.Join(keys, "wrong.key")
	for _, f := range []string{good, wrong} {
		if code, _, stderr := runPeer(t, "keygen", f); code != 0 {
			t.Fatalf("peer keygen %s: exit %d: %s", f, code, stderr)
		}
	}
	if info, err := os.Stat(good); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("keygen's file: %v %v", info.Mode(), err)
	}
	// init --cluster-key records the file in the config; a bad file is
	// refused before any home is made.
	initHome := filepath.Join(t.TempDir(), "init")
	if code, _, stderr := runPeer(t, "--home", initHome, "init", "--cluster-key", good); code != 0 {
		t.Fatalf("init --cluster-key: exit %d: %s", code, stderr)
	}
	if cfg, err := node.LoadConfig(filepath.Join(initHome, node.ConfigFile)); err != nil || cfg.ClusterKey != good {
		t.Fatalf("init --cluster-key: config cluster_key %q, %v", cfg.ClusterKey, err)
	}
	badHome := filepath.Join(t.TempDir(), "bad")
	code, _, stderr := runPeer(t, "--home", badHome, "init", "--cluster-key", filepath.Join(keys, "none.key"))
	if _, err := os.Stat(badHome); code == 0 || !strings.Contains(stderr, "does not exist") || err == nil {
		t.Fatalf("init with a missing key file: exit %d, home made: %v: %s", code, err == nil, stderr)
	}

	// Each member has a copy of its own, as on separate machines.
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	copies := make([]string, 3)
	for i := range copies {
		copies[i] = filepath.Join(keys, fmt.Sprintf("member-%d.key", i))
		if err := os.WriteFile(copies[i], raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := newCluster(t, 3, func(i int, p *Peer) { p.extra = []string{"--cluster-key", copies[i]} })
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))

	out := outsider(t, c, "outsider", wrong)
	Eventually(t, convergeTimeout, pollInterval, func() error {
		b, _ := os.ReadFile(out.LogPath)
		if !strings.Contains(string(b), "join failed: the group is closed and this peer's cluster key does not match") {
			return errors.New("the outsider has not said why it cannot join")
		}
		return nil
	})
	// Expect fails on any member listing a peer outside the cluster.
	if err := c.Expect(nil)(); err != nil {
		t.Fatal(err)
	}
	if ms, err := out.Members(); err != nil || len(ms.Members) != 1 {
		t.Fatalf("the outsider lists %d members (%v)", len(ms.Members), err)
	}

	// status and cluster-key list say the group is closed, by fingerprint.
	code, stdout, stderr := runPeer(t, "--home", c.Peers[1].Home, "status")
	if code != 0 || !strings.Contains(stdout, "group    closed") {
		t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	secret := strings.TrimSpace(strings.Split(strings.TrimSpace(string(raw)), "\n")[1])
	code, stdout, stderr = runPeer(t, "--home", c.Peers[1].Home, "--json", "cluster-key", "list")
	var list node.ClusterKeysInfo
	if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil || list.Group != "closed" || len(list.Keys) != 1 || strings.Contains(stdout, secret) {
		t.Fatalf("cluster-key list: exit %d\n%s%s", code, stdout, stderr)
	}

	// A bare host that connects to a member is refused the ring.
	h, err := libp2p.New(append(p2phost.Options(), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ai, err := peer.AddrInfoFromString(c.Peers[0].Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	if s, err := h.NewStream(ctx, ai.ID, dht.Protocol); err == nil {
		_, _ = s.Write([]byte{0, 0, 0, 1, 0})
		_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadAll(s); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a stranger's ring stream ended with %v; want a reset", err)
		}
	}
	Eventually(t, convergeTimeout, pollInterval, func() error {
		b, _ := os.ReadFile(c.Peers[0].LogPath)
		if !strings.Contains(string(b), "refused a stream from a peer that is not a member") || !strings.Contains(string(b), h.ID().String()) {
			return errors.New("peer-0 has not logged refusing the stranger")
		}
		return nil
	})

	// Rotation: add on all, use on all, remove the old on all.
	newKey := filepath.Join(keys, "new.key")
	if code, _, stderr := runPeer(t, "keygen", newKey); code != 0 {
		t.Fatalf("keygen: %s", stderr)
	}
	oldList := list.Keys[0].Fingerprint
	for _, step := range [][]string{{"add", "--from", newKey}, {"use", "--from", newKey}, {"remove", oldList}} {
		for _, p := range c.Peers {
			args := append([]string{"--home", p.Home, "cluster-key"}, step...)
			if code, stdout, stderr := runPeer(t, args...); code != 0 {
				t.Fatalf("%s: cluster-key %s: exit %d\n%s%s", p.Name, step[0], code, stdout, stderr)
			}
		}
		// The group stays whole: no member gone after each step.
		if err := c.Expect(nil)(); err != nil {
			t.Fatalf("after %s: %v", step[0], err)
		}
	}
	// Each member's key file now holds only the new key, and a restart of
	// one reads it and rejoins.
	fresh, _ := os.ReadFile(newKey)
	for i, f := range copies {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), secret) || !strings.Contains(string(b), strings.Split(strings.TrimSpace(string(fresh)), "\n")[1]) {
			t.Fatalf("member %d's key file after rotation:\n%s", i, b)
		}
	}
	c.Peers[2].Stop()
	c.Peers[2].Restart()
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	// The primary cannot be removed.
	code, _, stderr = runPeer(t, "--home", c.Peers[2].Home, "cluster-key", "remove", "--from", newKey)
	if code == 0 || !strings.Contains(stderr, "primary") {
		t.Fatalf("removing the primary: exit %d: %s", code, stderr)
	}
	stale := outsider(t, c, "stale", filepath.Join(keys, "stale.key"), secret)
	Eventually(t, convergeTimeout, pollInterval, func() error {
		b, _ := os.ReadFile(stale.LogPath)
		if !strings.Contains(string(b), "join failed: the group is closed and this peer's cluster key does not match") {
			return errors.New("the stale peer has not failed to join")
		}
		return nil
	})
	if err := c.Expect(nil)(); err != nil {
		t.Fatal(err)
	}
}

// outsider starts a peer outside the cluster that bootstraps to peer-0
// with key file keyFile (written with key, when given).
func outsider(t *testing.T, c *Cluster, name, keyFile string, key ...string) *Peer {
	t.Helper()
	if len(key) > 0 {
		if err := os.WriteFile(keyFile, []byte(key[0]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(t.TempDir(), name)
	p := &Peer{Name: name, Home: home, LogPath: filepath.Join(home, "peer.log"), t: t,
		boot: c.Peers[0].Addr, extra: []string{"--cluster-key", keyFile}}
	t.Cleanup(func() {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("last lines of %s's log:\n%s", name, logTail(p.LogPath, logTailLines))
		}
	})
	if err := p.start(0); err != nil {
		t.Fatal(err)
	}
	if err := p.waitReady(); err != nil {
		t.Fatal(err)
	}
	return p
}

package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
)

// convergeTimeout bounds how long a group may take to agree on a change:
// a join, a failure, a leave. LAN timing needs seconds; the rest is slack
// for a loaded machine.
const convergeTimeout = 60 * time.Second

func TestFivePeersJoin(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))

	seen := map[string]string{}
	for _, p := range c.Peers {
		info, err := p.IDInfo()
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[info.ID]; dup {
			t.Errorf("%s and %s share the peer ID %s", other, p.Name, info.ID)
		}
		seen[info.ID] = p.Name
		suffix := "/p2p/" + info.ID
		ok := false
		for _, a := range info.Addrs {
			ok = ok || strings.HasSuffix(a, suffix)
		}
		if !ok {
			t.Errorf("%s: no address ends in %s: %q", p.Name, suffix, info.Addrs)
		}
	}
}

func TestKilledPeerSeenAsFailed(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))

	victim := c.Peers[3]
	victim.Kill9()
	// Suspect comes first; only dead passes, and the others must still
	// see each other alive.
	Eventually(t, convergeTimeout, pollInterval, c.Expect(map[*Peer]string{victim: "dead"}))
}

func TestRestartedPeerKeepsIDAndRejoins(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 5)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))

	victim := c.Peers[2]
	idBefore, portBefore := victim.ID, victim.Port
	victim.Kill9()
	Eventually(t, convergeTimeout, pollInterval, c.Expect(map[*Peer]string{victim: "dead"}))

	victim.Restart()
	if victim.ID != idBefore {
		t.Fatalf("%s came back as %s, want its old ID %s", victim.Name, victim.ID, idBefore)
	}
	if victim.Port != portBefore {
		t.Fatalf("%s came back on port %d, want %d", victim.Name, victim.Port, portBefore)
	}
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
}

func TestGracefulLeave(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 3)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))

	leaver := c.Peers[1]
	took := leaver.Stop() // fails unless it exits 0 within stopTimeout
	t.Logf("%s exited 0 %v after SIGTERM", leaver.Name, took.Round(time.Millisecond))
	Eventually(t, convergeTimeout, pollInterval, c.Expect(map[*Peer]string{leaver: "left"}))
}

func TestBadInput(t *testing.T) {
	t.Parallel()

	t.Run("bootstrap without /p2p/", func(t *testing.T) {
		home := filepath.Join(t.TempDir(), "h")
		code, _, stderr := runPeer(t, "run", "--home", home, "--bootstrap", "/ip4/127.0.0.1/tcp/1")
		if code != 2 {
			t.Errorf("exit code %d, want 2; stderr: %s", code, stderr)
		}
		if line := strings.TrimRight(stderr, "\n"); line == "" || strings.Contains(line, "\n") {
			t.Errorf("stderr is not a single line: %q", stderr)
		}
		if !strings.Contains(stderr, "/p2p/") {
			t.Errorf("stderr does not mention /p2p/: %q", stderr)
		}
		assertMissing(t, home)
	})

	t.Run("unknown flag", func(t *testing.T) {
		// --home keeps the daemon off the user's own ~/.peer should the
		// flag be accepted after all.
		home := filepath.Join(t.TempDir(), "h")
		code, _, stderr := runPeer(t, "run", "--home", home, "--frob")
		if code != 2 {
			t.Errorf("exit code %d, want 2; stderr: %s", code, stderr)
		}
		assertMissing(t, home)
	})

	t.Run("running peer", func(t *testing.T) {
		c := NewCluster(t, 1)
		p := c.Peers[0]

		// (c) A second daemon on the same home; port 0 so that only the
		// home lock can refuse it.
		code, _, stderr := runPeer(t, "run", "--home", p.Home,
			"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
		if code != 1 {
			t.Errorf("second run on %s: exit code %d, want 1; stderr: %s", p.Home, code, stderr)
		}
		if !strings.Contains(stderr, "in use") {
			t.Errorf("second run on the same home: stderr does not mention \"in use\": %q", stderr)
		}

		// (d) A new home on the running peer's TCP port.
		home2 := filepath.Join(t.TempDir(), "h2")
		code, _, stderr = runPeer(t, "run", "--home", home2, "--listen", "/ip4/127.0.0.1/tcp/"+strconv.Itoa(p.Port))
		if code != 1 {
			t.Errorf("run on taken port %d: exit code %d, want 1; stderr: %s", p.Port, code, stderr)
		}
		if !strings.Contains(stderr, "port") || !strings.Contains(stderr, "in use") {
			t.Errorf("run on taken port %d: stderr does not mention \"port\" and \"in use\": %q", p.Port, stderr)
		}
		assertMissing(t, home2)

		// Neither attempt may disturb the running peer.
		info, err := p.IDInfo()
		if err != nil {
			t.Fatalf("running peer after the refused runs: %v", err)
		}
		if info.ID != p.ID {
			t.Errorf("running peer now answers as %s, was %s", info.ID, p.ID)
		}
	})

	t.Run("foreign home", func(t *testing.T) {
		home := t.TempDir()
		stray := filepath.Join(home, "notes.txt")
		if err := os.WriteFile(stray, []byte("mine\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runPeer(t, "run", "--home", home,
			"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1")
		if code != 1 {
			t.Errorf("exit code %d, want 1; stderr: %s", code, stderr)
		}
		if !strings.Contains(stderr, "not a peer home") {
			t.Errorf("stderr does not mention \"not a peer home\": %q", stderr)
		}
		if b, err := os.ReadFile(stray); err != nil || string(b) != "mine\n" {
			t.Errorf("the unrelated file was changed or removed: %q, %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(home, node.IdentityFile)); !os.IsNotExist(err) {
			t.Errorf("%s was written into the foreign home (stat: %v)", node.IdentityFile, err)
		}
	})

	t.Run("members without daemon", func(t *testing.T) {
		home := filepath.Join(t.TempDir(), "none")
		code, _, stderr := runPeer(t, "--home", home, "members")
		if code != 1 {
			t.Errorf("exit code %d, want 1; stderr: %s", code, stderr)
		}
		if !strings.Contains(stderr, "no peer is running") {
			t.Errorf("stderr does not mention \"no peer is running\": %q", stderr)
		}
		assertMissing(t, home)
	})
}

// assertMissing fails the test if path exists: a refused command must
// leave nothing behind.
func assertMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists after the refused command (stat: %v)", path, err)
	}
}

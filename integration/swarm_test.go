package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// swarmDone waits until p's swarm h has every piece verified and returns
// its status.
func swarmDone(t *testing.T, p *Peer, h string, timeout time.Duration) swarm.Status {
	t.Helper()
	var st swarm.Status
	Eventually(t, timeout, pollInterval, func() error {
		c, err := p.api()
		if err != nil {
			return err
		}
		st, err = c.SwarmStatus(context.Background(), h)
		if err != nil {
			return err
		}
		if st.Error != "" {
			return permanentError{errorString(p.Name + ": " + st.Error)}
		}
		if !st.Complete {
			return errorString(p.Name + ": " + describeStatus(st))
		}
		return nil
	})
	return st
}

type errorString string

func (e errorString) Error() string { return string(e) }

func describeStatus(st swarm.Status) string {
	s := fmt.Sprintf("%s after %.1f s: %d/%d pieces, %d peers", st.Name, st.Seconds, st.Have, st.Pieces, st.Peers)
	// What each connection is doing, for a download that does not move.
	for _, c := range st.Conns {
		id := c.Peer
		if len(id) > 8 {
			id = id[len(id)-8:]
		}
		s += fmt.Sprintf("; %s: %d pieces (all %v), it chokes us %v, we want %v, asked %d, its requests %d, offered %d, %.1f s since a block",
			id, c.Pieces, c.HaveAll, c.PeerChoking, c.AmInterested, c.Asked, c.Requests, c.Offered, c.SinceBlock)
	}
	return s
}

// Eight real peers: one shares a file, seven fetch it by infohash alone
// (providers from the ring, manifest from peers), and every copy is
// byte-identical. One of them is killed with SIGKILL half-way and
// restarted: it resumes from the pieces it had instead of starting again.
func TestSwarmEightPeersAndResume(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 8)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	src := filepath.Join(t.TempDir(), "data.bin")
	const size = 8 << 20
	sum, err := swarm.WriteSample(src, size, 42)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seed, err := c.Peers[0].api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := seed.Share(ctx, node.ShareRequest{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	slow := c.Peers[7]
	for _, p := range c.Peers[1:] {
		cl, err := p.api()
		if err != nil {
			t.Fatal(err)
		}
		req := node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(p.Home, "downloads")}
		if p == slow {
			req.DownloadRate = 2 << 20 // so that it can be killed half-way
		}
		if _, err := cl.StartGet(ctx, req); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	// Kill the slow one once it has a third of the pieces.
	var had int
	Eventually(t, 60*time.Second, pollInterval, func() error {
		cl, err := slow.api()
		if err != nil {
			return err
		}
		st, err := cl.SwarmStatus(ctx, sh.InfoHash)
		if err != nil {
			return err
		}
		if st.Complete {
			return permanentError{errorString("the slow peer finished before it could be killed")}
		}
		if st.Pieces == 0 || st.Have < st.Pieces/3 {
			return errorString(describeStatus(st))
		}
		had = st.Have
		return nil
	})
	slow.Kill9()
	partial := filepath.Join(slow.Home, "downloads", "data.bin.part")
	if _, err := os.Stat(partial); err != nil {
		t.Fatalf("no partial file after the kill: %v", err)
	}
	if _, err := os.Stat(filepath.Join(slow.Home, "downloads", "data.bin")); err == nil {
		t.Fatal("the final name exists although the download was killed half-way")
	}
	slow.Restart()
	for _, p := range c.Peers[1:] {
		st := swarmDone(t, p, sh.InfoHash, 90*time.Second)
		got, err := swarm.FileSHA1(st.Path)
		if err != nil || got != sum {
			t.Fatalf("%s: %s differs from the original (%v)", p.Name, st.Path, err)
		}
		if p == slow {
			t.Logf("%s had %d of %d pieces when killed; downloaded %d of %d bytes after the restart",
				p.Name, had, st.Pieces, st.Downloaded, size)
			if st.Downloaded >= size {
				t.Errorf("%s downloaded the whole file again after its restart", p.Name)
			}
		}
	}
}

// A peer whose copy is corrupted on disk after it shared it serves bad
// blocks; the peers fetching ban it and still finish with the right bytes
// from the honest seed.
func TestSwarmBansPeerServingCorruptData(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	const size = 4 << 20
	good := filepath.Join(t.TempDir(), "data.bin")
	bad := filepath.Join(t.TempDir(), "data.bin")
	sum, err := swarm.WriteSample(good, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := swarm.WriteSample(bad, size, 7); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var hash string
	for i, path := range []string{good, bad} {
		cl, err := c.Peers[i].api()
		if err != nil {
			t.Fatal(err)
		}
		req := node.ShareRequest{Path: path, PieceLength: 64 << 10}
		if i == 0 {
			// The honest seed is slow (a 4 MiB file takes it 32 s), so the
			// leechers surely ask the other too, even when they find it late.
			req.UploadRate = 128 << 10
		}
		sh, err := cl.Share(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		hash = sh.InfoHash
	}
	b, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1000; i < len(b); i += 64 << 10 {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Peers[2:] {
		cl, err := p.api()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.StartGet(ctx, node.GetRequest{Ref: hash, Out: filepath.Join(p.Home, "downloads")}); err != nil {
			t.Fatal(err)
		}
	}
	banned := 0
	for _, p := range c.Peers[2:] {
		st := swarmDone(t, p, hash, 90*time.Second)
		got, err := swarm.FileSHA1(st.Path)
		if err != nil || got != sum {
			t.Fatalf("%s: %s differs from the original (%v)", p.Name, st.Path, err)
		}
		banned += st.Banned
	}
	if banned == 0 {
		cl, err := c.Peers[1].api()
		if err == nil {
			st, _ := cl.SwarmStatus(ctx, hash)
			t.Errorf("no peer banned the one serving corrupt data; it uploaded %d bytes", st.Uploaded)
		}
	}
}

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// A `peer get` whose output directory is a tmpfs too small for the file:
// the download is refused before any piece is fetched, and the waiting
// `peer get` exits non-zero with an error naming the file, the space it
// needs and the space free. The saved state stays; once the tmpfs is made
// larger, the same `peer get` fetches the file whole.
//
// tmpfs reserves the whole file up front (fallocate), so it never fills
// half-way through; TestFullDiskMidTransfer covers that, on ext2.
func TestFullDiskGet(t *testing.T) {
	t.Parallel()
	dl := fullDiskTmpfs(t, "16m")
	c := NewCluster(t, 2)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	seed, leech := c.Peers[0], c.Peers[1]
	const size = 24 << 20
	src := filepath.Join(t.TempDir(), "data.bin")
	sum, err := swarm.WriteSample(src, size, 24)
	if err != nil {
		t.Fatal(err)
	}
	hash := fullDiskShare(t, seed, src)
	part := filepath.Join(dl, "data.bin.part")

	code, stdout, stderr := runPeer(t, "get", "--home", leech.Home, "--wait", "15s", hash, "-o", dl)
	t.Logf("first peer get: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	if code == 0 {
		t.Fatalf("peer get into a 16 MiB tmpfs of a 24 MiB file exited 0")
	}
	wantErr := regexp.MustCompile(regexp.QuoteMeta("not enough disk space for "+part+": need 24.0 MiB more, ") + `1[56]\.\d MiB free`)
	if !wantErr.MatchString(stderr) {
		t.Fatalf("peer get said %q; want it to match %q", stderr, wantErr)
	}
	st := fullDiskStatus(t, leech, hash)
	if !wantErr.MatchString(st.Error) {
		t.Errorf("the swarm's status error is %q; want it to match %q", st.Error, wantErr)
	}
	if st.Downloaded != 0 {
		t.Errorf("the refused download fetched %d bytes of pieces; want none", st.Downloaded)
	}
	_, list, _ := runPeer(t, "swarms", "--home", leech.Home)
	if !strings.Contains(list, "failed: not enough disk space for "+part) {
		t.Errorf("peer swarms does not show the full disk:\n%s", list)
	}
	saved := fullDiskSavedState(t, leech, hash)
	if saved.OutDir != dl {
		t.Errorf("the saved state's out_dir is %q, want %q", saved.OutDir, dl)
	}
	if ents, _ := os.ReadDir(dl); len(ents) != 0 {
		t.Errorf("the refused download left %d entries on the tmpfs: %v", len(ents), ents)
	}

	// Room: the same command now fetches the file.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", dl).CombinedOutput(); err != nil {
		t.Fatalf("remount %s with 64 MiB: %v: %s", dl, err, out)
	}
	code, stdout, stderr = runPeer(t, "get", "--home", leech.Home, "--wait", "15s", hash, "-o", dl)
	if code != 0 {
		t.Fatalf("peer get after the tmpfs grew: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	final := filepath.Join(dl, "data.bin")
	if got, err := swarm.FileSHA1(final); err != nil || got != sum {
		t.Fatalf("%s differs from the original (%v)", final, err)
	}
	st = fullDiskStatus(t, leech, hash)
	t.Logf("second peer get: %s; fetched %d bytes (%d redundant)", strings.TrimSpace(stdout), st.Downloaded, st.Redundant)
	if slack := int64(4<<20) + st.Redundant; st.Downloaded > size+slack {
		t.Errorf("fetched %d bytes for a %d-byte file", st.Downloaded, size)
	}
}

// A `peer get` into a file system that fills half-way through (ext2, which
// cannot reserve blocks, filled by another writer): the waiting `peer get`
// exits non-zero naming the file, the space still needed and the space
// free; the verified pieces stay on disk and in the saved state. Once space
// is freed, the same `peer get` fetches only the pieces that were missing.
func TestFullDiskMidTransfer(t *testing.T) {
	t.Parallel()
	dl := fullDiskExt2(t, 40<<20)
	c := NewCluster(t, 2)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	seed, leech := c.Peers[0], c.Peers[1]
	const size = 24 << 20
	src := filepath.Join(t.TempDir(), "data.bin")
	sum, err := swarm.WriteSample(src, size, 25)
	if err != nil {
		t.Fatal(err)
	}
	hash := fullDiskShare(t, seed, src)
	part := filepath.Join(dl, "data.bin.part")

	get := fullDiskStartGet(t, "get", "--home", leech.Home, "--wait", "15s", "--download-rate", "3MiB/s", hash, "-o", dl)
	var had swarm.Status
	Eventually(t, 40*time.Second, pollInterval, func() error {
		if get.exited() {
			return permanentError{fmt.Errorf("peer get ended before the disk was filled: %s", get.result())}
		}
		cl, err := leech.api()
		if err != nil {
			return err
		}
		st, err := cl.SwarmStatus(context.Background(), hash)
		if err != nil {
			return err
		}
		if st.Pieces == 0 || st.Have < st.Pieces/3 {
			return errorString(describeStatus(st))
		}
		had = st
		return nil
	})
	ballast := filepath.Join(dl, "ballast")
	fullDiskFill(t, ballast)
	code, stdout, stderr := get.wait(t, 40*time.Second)
	t.Logf("first peer get: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	if code == 0 {
		t.Fatalf("peer get exited 0 although the disk filled at %d of %d pieces", had.Have, had.Pieces)
	}
	st := fullDiskStatus(t, leech, hash)
	if st.Complete || st.Have == 0 || st.Have >= st.Pieces {
		t.Fatalf("after the disk filled: %s; want some pieces, not all", describeStatus(st))
	}
	pieceLen := int64(size / st.Pieces)
	missing := int64(st.Pieces-st.Have) * pieceLen
	wantErr := regexp.MustCompile(regexp.QuoteMeta("no space left on device writing "+part+": need "+
		units.FormatBytes(float64(missing))+" more, ") + `\d+(\.\d)? (B|KiB|MiB) free`)
	if !wantErr.MatchString(stderr) || !wantErr.MatchString(st.Error) {
		t.Fatalf("peer get said %q and the status %q; want both to match %q", stderr, st.Error, wantErr)
	}
	if !strings.Contains(stderr, fmt.Sprintf("%d of %d pieces are verified and kept", st.Have, st.Pieces)) {
		t.Errorf("peer get does not say what it kept: %q", stderr)
	}
	// It stopped: once its connections are gone, none comes back (a
	// swarm that went on would find the seed again within 2 s) and what
	// it fetched does not grow.
	Eventually(t, 10*time.Second, pollInterval, func() error {
		if st := fullDiskStatus(t, leech, hash); st.Peers != 0 {
			return fmt.Errorf("the failed download still has %d peers", st.Peers)
		}
		return nil
	})
	stopped := fullDiskStatus(t, leech, hash)
	fullDiskConsistently(t, 4*time.Second, func() error {
		now := fullDiskStatus(t, leech, hash)
		if now.Peers != 0 || now.Downloaded != stopped.Downloaded || now.Have != stopped.Have {
			return fmt.Errorf("the failed download went on: %d peers, %d bytes fetched, %d pieces; %d bytes and %d pieces when it stopped",
				now.Peers, now.Downloaded, now.Have, stopped.Downloaded, stopped.Have)
		}
		return nil
	})
	saved := fullDiskSavedState(t, leech, hash)
	if n := fullDiskBits(saved.Have); n != st.Have {
		t.Errorf("the saved state has %d pieces; the swarm had %d verified", n, st.Have)
	}
	kept := st.Have

	// Free the space and fetch again: only the missing pieces come.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runPeer(t, "get", "--home", leech.Home, "--wait", "15s", hash, "-o", dl)
	if code != 0 {
		t.Fatalf("peer get after freeing space: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	final := filepath.Join(dl, "data.bin")
	if got, err := swarm.FileSHA1(final); err != nil || got != sum {
		t.Fatalf("%s differs from the original (%v)", final, err)
	}
	st = fullDiskStatus(t, leech, hash)
	t.Logf("%d of %d pieces kept when the disk filled; the second peer get fetched %d bytes, %d were missing (%d redundant)",
		kept, st.Pieces, st.Downloaded, missing, st.Redundant)
	if slack := 4*pieceLen + st.Redundant; st.Downloaded > missing+slack {
		t.Errorf("the second peer get fetched %d bytes; only %d were missing", st.Downloaded, missing)
	}
}

// fullDiskConsistently polls cond for d and fails the test the first time
// it returns an error: a condition that must stay true.
func fullDiskConsistently(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		time.Sleep(min(pollInterval, left))
	}
}

// fullDiskNeedRoot skips, loudly, unless the test may mount file systems.
func fullDiskNeedRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("SKIPPED: %s mounts %s and needs root; run it as root (CI does)", t.Name(), what)
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skipf("SKIPPED: %s needs mount(8), which is not on PATH: %v", t.Name(), err)
	}
}

// fullDiskHasFS reports whether the kernel lists the file system fs.
func fullDiskHasFS(fs string) bool {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

// fullDiskMount mounts with args on dir and unmounts it when the test
// ends, after the peers (registered before them, so it runs after them).
// A mount the kernel refuses skips the test, loudly.
func fullDiskMount(t *testing.T, dir, what string, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", append(args, dir)...).CombinedOutput(); err != nil {
		t.Skipf("SKIPPED: %s cannot mount %s (mount %s %s: %v: %s); it needs a kernel and a sandbox that allow it",
			t.Name(), what, strings.Join(args, " "), dir, err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
				t.Errorf("umount -l %s: %v: %s", dir, err, out)
			}
		}
	})
}

// fullDiskTmpfs mounts a tmpfs of size (as mount's size= takes it) for the
// test: the output directory of the download alone, not any peer's home.
// It must come before NewCluster, so that it is unmounted after the peers
// have gone.
func fullDiskTmpfs(t *testing.T, size string) string {
	t.Helper()
	fullDiskNeedRoot(t, "a "+size+" tmpfs")
	if !fullDiskHasFS("tmpfs") {
		t.Skipf("SKIPPED: %s needs tmpfs, which this kernel does not list in /proc/filesystems", t.Name())
	}
	dir := filepath.Join(t.TempDir(), "dl")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fullDiskMount(t, dir, "a tmpfs", "-t", "tmpfs", "-o", "size="+size, "tmpfs")
	return dir
}

// fullDiskExt2 makes an ext2 file system of size bytes in an image file
// and mounts it through a loop device. ext2 cannot reserve blocks
// (fallocate is not supported), so files on it are sparse and fill as
// they are written. Like fullDiskTmpfs, it must come before NewCluster.
func fullDiskExt2(t *testing.T, size int64) string {
	t.Helper()
	fullDiskNeedRoot(t, "an ext2 image through a loop device")
	mkfs, err := exec.LookPath("mkfs.ext2")
	if err != nil {
		t.Skipf("SKIPPED: %s needs mkfs.ext2 (e2fsprogs), which is not on PATH", t.Name())
	}
	if !fullDiskHasFS("ext2") && !fullDiskHasFS("ext4") {
		t.Skipf("SKIPPED: %s needs ext2 (or ext4, which mounts ext2), which this kernel does not list in /proc/filesystems", t.Name())
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("SKIPPED: %s needs loop devices: %v", t.Name(), err)
	}
	base := t.TempDir()
	img := filepath.Join(base, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	// -m 0: no blocks reserved for root, so that the daemon (root here)
	// and statfs's figure of what is free agree.
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext2 %s: %v: %s", img, err, out)
	}
	dir := filepath.Join(base, "dl")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fullDiskMount(t, dir, "an ext2 image through a loop device", "-t", "ext2", "-o", "loop", img)
	return dir
}

// fullDiskFill writes path until the file system holding it is full.
func fullDiskFill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, n := range []int{1 << 20, 4 << 10, 1 << 10} {
		chunk := make([]byte, n)
		for {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling %s: %v", path, err)
				}
				break
			}
		}
	}
}

// fullDiskShare has p share path and returns the infohash.
func fullDiskShare(t *testing.T, p *Peer, path string) string {
	t.Helper()
	cl, err := p.api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := cl.Share(context.Background(), node.ShareRequest{Path: path})
	if err != nil {
		t.Fatalf("%s: share %s: %v", p.Name, path, err)
	}
	return sh.InfoHash
}

// fullDiskStatus is p's status of swarm h.
func fullDiskStatus(t *testing.T, p *Peer, h string) swarm.Status {
	t.Helper()
	cl, err := p.api()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := cl.SwarmStatus(ctx, h)
	if err != nil {
		t.Fatalf("%s: status of %s: %v", p.Name, h, err)
	}
	return st
}

// fullDiskState is what the leecher's home keeps of a download (the
// fields of swarm's state.json that the tests look at).
type fullDiskState struct {
	OutDir string `json:"out_dir"`
	Have   []byte `json:"have"`
}

// fullDiskSavedState reads the saved state of swarm h in p's home, failing
// the test if there is none.
func fullDiskSavedState(t *testing.T, p *Peer, h string) fullDiskState {
	t.Helper()
	path := filepath.Join(p.Home, "swarms", h, "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: no saved state for %s: %v", p.Name, h, err)
	}
	var st fullDiskState
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return st
}

// fullDiskBits counts the bits set in a piece bitfield.
func fullDiskBits(b []byte) int {
	n := 0
	for _, x := range b {
		for ; x != 0; x &= x - 1 {
			n++
		}
	}
	return n
}

// fullDiskRun is a peer command running in the background.
type fullDiskRun struct {
	cmd      *exec.Cmd
	args     []string
	out, err bytes.Buffer
	done     chan struct{}
}

// fullDiskStartGet starts the peer binary with args without waiting for
// it; the process is killed when the test ends.
func fullDiskStartGet(t *testing.T, args ...string) *fullDiskRun {
	t.Helper()
	r := &fullDiskRun{args: args, done: make(chan struct{})}
	r.cmd = exec.Command(peerBin, args...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.err
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("peer %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		if !r.exited() {
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *fullDiskRun) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// result describes an exited command (call only once exited).
func (r *fullDiskRun) result() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.cmd.ProcessState.ExitCode(), r.out.String(), r.err.String())
}

// wait waits for the command to exit, failing the test after timeout.
func (r *fullDiskRun) wait(t *testing.T, timeout time.Duration) (code int, stdout, stderr string) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("peer %s: still running after %v; killed\nstderr: %s", strings.Join(r.args, " "), timeout, r.err.String())
	}
	return r.cmd.ProcessState.ExitCode(), r.out.String(), r.err.String()
}

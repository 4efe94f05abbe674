package swarm

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/swarm/meta"
)

func TestBufPoolReusesAndBounds(t *testing.T) {
	p := newBufPool(3 << 10)
	a := p.get(1 << 10)
	if len(a) != 1<<10 {
		t.Fatalf("got %d bytes, want %d", len(a), 1<<10)
	}
	a[0] = 7
	p.put(a)
	if b := p.get(1 << 10); &b[0] != &a[0] {
		t.Fatal("a returned buffer was not reused")
	}
	if c := p.get(2 << 10); len(c) != 2<<10 {
		t.Fatalf("got %d bytes for a 2 KiB ask", len(c))
	}
	for range 5 {
		p.put(make([]byte, 1<<10))
	}
	if p.bytes > p.max {
		t.Fatalf("the pool holds %d bytes, over its bound of %d", p.bytes, p.max)
	}
}

// smallDisk mounts a tmpfs of size bytes for the test, or skips loudly
// when this process may not mount.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: the full-disk test mounts a small tmpfs and needs root (CI runs it as root)")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("SKIPPED: no mount(8) on this machine: ", err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %s tmpfs: %v: %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// A download that does not fit is refused at once with a clear error,
// leaves no file it created behind, and keeps what was there before.
func TestFullDiskRefusedUpFront(t *testing.T) {
	disk := smallDisk(t, "1m")
	src := filepath.Join(t.TempDir(), "tree")
	writeFile(t, filepath.Join(src, "a.bin"), 256<<10, 1)
	writeFile(t, filepath.Join(src, "b.bin"), 4<<20, 2)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := p2phost.Loopback(1, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer hosts[0].Close()
	m := NewManager(hosts[0], nil, Config{StateDir: t.TempDir()})
	defer m.Close()

	_, err = m.Get(info.Hash(), disk, GetOptions{Info: info})
	if err == nil || !strings.Contains(err.Error(), "not enough disk space") || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Get into a full disk: %v; want a 'not enough disk space' error wrapping ENOSPC", err)
	}
	left, _ := filepath.Glob(filepath.Join(disk, "*", "*"))
	if len(left) != 0 {
		t.Fatalf("files left on the full disk: %v", left)
	}
	if m.Swarm(info.Hash()) != nil {
		t.Fatal("a swarm was added for a download that cannot be stored")
	}

	// A partial download already there is kept as it was.
	part := filepath.Join(disk, info.Name+".part")
	if err := os.MkdirAll(part, 0o755); err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xAB}, 100<<10)
	if err := os.WriteFile(filepath.Join(part, "a.bin"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(info.Hash(), disk, GetOptions{Info: info}); err == nil {
		t.Fatal("the second Get into a full disk succeeded")
	}
	got, err := os.ReadFile(filepath.Join(part, "a.bin"))
	if err != nil {
		t.Fatalf("the earlier partial file is gone: %v", err)
	}
	if !bytes.Equal(got[:len(old)], old) {
		t.Fatal("the earlier partial file's data changed")
	}
}

package swarm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

// fullDiskFree replaces DiskFree for a test with one that reports free
// bytes, and puts the old one back after it.
func fullDiskFree(t *testing.T, free func() int64) {
	t.Helper()
	old := DiskFree
	DiskFree = func(string) (int64, error) { return free(), nil }
	t.Cleanup(func() { DiskFree = old })
}

// fullDiskFault is a disk that takes limit bytes of pieces and then fails
// every write with ENOSPC, as a sparse file on a file system that fills up.
type fullDiskFault struct {
	mu      sync.Mutex
	limit   int64
	written int64
	full    bool
	refused int // writes refused
}

func (d *fullDiskFault) writeAt(f *os.File, b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.full || d.written+int64(len(b)) > d.limit {
		d.full = true
		d.refused++
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	d.written += int64(len(b))
	return f.WriteAt(b, off)
}

func (d *fullDiskFault) isFull() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.full
}

// A disk that fills half-way through a download: the swarm stops at once
// with an error naming the file and the space needed, stops fetching, and
// saves the pieces it verified; once there is room, Restart fetches only
// the pieces it lacks.
func TestFullDiskMidTransferKeepsPiecesAndRestarts(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "seed", "data.bin")
	const size = 4 << 20
	want := writeFile(t, src, size, 11)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	disk := &fullDiskFault{limit: size * 3 / 8}
	fullDiskFree(t, func() int64 {
		if disk.isFull() {
			return 0
		}
		return 1 << 40
	})
	stateDir := filepath.Join(dir, "state")
	ps := startPeers(t, 2, func(i int) Config {
		if i == 0 {
			return Config{}
		}
		return Config{StateDir: stateDir}
	})
	seed, err := ps[0].m.Seed(info, src, ShareOptions{NoSuperSeed: true})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	s, err := ps[1].m.Get(info.Hash(), out, GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.store.writeAt = disk.writeAt
	s.mu.Unlock()
	s.AddPeers(ps[0].h.ID())

	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("the download neither failed nor finished in 30 s: %+v", s.Status())
	}
	var ns *NoSpaceError
	if err := s.Err(); !errors.As(err, &ns) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the download ended with %v; want a NoSpaceError wrapping ENOSPC", err)
	}
	st := s.Status()
	part := filepath.Join(out, info.Name+".part")
	if st.Have == 0 || st.Have >= info.NumPieces() {
		t.Fatalf("%d of %d pieces verified when the disk filled; want some, not all", st.Have, info.NumPieces())
	}
	var missing int64
	for i := range info.NumPieces() {
		if !wire.Bits(s.have).Has(i) {
			missing += info.PieceSize(i)
		}
	}
	// The message gives what was missing when the disk filled. A piece
	// already in flight may verify after that, so what is missing now can
	// be less, by at most the pieces that were being written.
	if st.Error != s.Err().Error() {
		t.Fatalf("status error %q differs from Err %q", st.Error, s.Err())
	}
	prefix, suffix := fmt.Sprintf("no space left on device writing %s: need ", part), " more, 0 B free"
	need, ok := strings.CutPrefix(st.Error, prefix)
	if need, ok = strings.CutSuffix(need, suffix); !ok {
		t.Fatalf("status error %q; want %q<size>%q", st.Error, prefix, suffix)
	}
	needBytes, err := units.ParseSize(strings.ReplaceAll(need, " ", ""))
	if err != nil {
		t.Fatalf("status error %q: the size %q does not read: %v", st.Error, need, err)
	}
	// FormatBytes keeps 2 significant digits: allow its rounding.
	if lo, hi := float64(missing)*0.95, float64(missing+int64(4*info.PieceLength))*1.05; float64(needBytes) < lo || float64(needBytes) > hi {
		t.Fatalf("status error says %s missing (%d B); %d B are missing now", need, needBytes, missing)
	}
	if !IsNoSpaceMessage(st.Error) {
		t.Errorf("IsNoSpaceMessage(%q) = false", st.Error)
	}

	// It stops: its work is cancelled (so it dials, accepts and asks for
	// nothing more) and both sides let go of the connection.
	if s.ctx.Err() == nil {
		t.Error("the failed swarm's work goes on")
	}
	testwait.Until(t, 10*time.Second, func() error {
		if p := s.Status().Peers + seed.Status().Peers; p != 0 {
			return fmt.Errorf("%d connections left between the seed and the failed download", p)
		}
		return nil
	})
	disk.mu.Lock()
	refused := disk.refused
	disk.mu.Unlock()
	// In-flight pieces may still arrive and be refused, a pipeline's worth
	// at most; a swarm that kept fetching would be refused far more.
	if limit := info.NumPieces(); refused > limit {
		t.Errorf("%d piece writes refused after the disk filled; want the swarm to stop", refused)
	}

	// The verified pieces are saved, and each is on disk intact.
	raw, err := os.ReadFile(filepath.Join(stateDir, info.Hash().String(), "state.json"))
	if err != nil {
		t.Fatalf("no saved state after the disk filled: %v", err)
	}
	var saved state
	if err := json.Unmarshal(raw, &saved); err != nil {
		t.Fatal(err)
	}
	savedN := 0
	for i := range info.NumPieces() {
		if wire.Bits(saved.Have).Has(i) {
			savedN++
			if !bytes.Equal(readPiece(t, part, info, i), want[int64(i)*info.PieceLength:][:info.PieceSize(i)]) {
				t.Fatalf("saved piece %d differs on disk", i)
			}
		}
	}
	if savedN == 0 || savedN > st.Have {
		t.Fatalf("the saved state has %d pieces; the swarm had %d verified", savedN, st.Have)
	}
	had := st.Have

	// Room again: the download goes on from what it had.
	s2, ok, err := ps[1].m.Restart(info.Hash(), out)
	if err != nil || !ok {
		t.Fatalf("restart after the disk was freed: ok %v, %v", ok, err)
	}
	if s2 == s {
		t.Fatal("Restart returned the failed swarm")
	}
	if got := s2.Status().Have; got < had {
		t.Fatalf("restarted with %d pieces; %d were verified before", got, had)
	}
	s2.AddPeers(ps[0].h.ID())
	waitDone(t, s2, 30*time.Second)
	got, err := os.ReadFile(filepath.Join(out, info.Name))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the finished download differs from the original (%v)", err)
	}
	st2 := s2.Status()
	slack := 2*info.PieceLength + st2.Redundant
	t.Logf("%d of %d pieces when the disk filled; %d bytes fetched after the restart, %d were missing (%d redundant)",
		had, info.NumPieces(), st2.Downloaded, missing, st2.Redundant)
	if st2.Downloaded > missing+slack {
		t.Errorf("fetched %d bytes after the restart; only %d were missing", st2.Downloaded, missing)
	}
	// A download that runs, or is complete, is not restarted.
	if _, ok, err := ps[1].m.Restart(info.Hash(), out); ok || err != nil {
		t.Errorf("Restart of a complete download: ok %v, %v", ok, err)
	}
}

func readPiece(t *testing.T, path string, info *meta.Info, i int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, info.PieceSize(i))
	if _, err := f.ReadAt(b, int64(i)*info.PieceLength); err != nil {
		t.Fatal(err)
	}
	return b
}

// A download larger than the free space is refused before anything is
// made, and the error says where, how much is needed and how much is free.
func TestFullDiskUpFrontSaysNeedAndFree(t *testing.T) {
	fullDiskFree(t, func() int64 { return 1 << 20 })
	dir := t.TempDir()
	_, info := seedFile(t, dir, 3<<20, 5)
	ps := startPeers(t, 1, func(int) Config { return Config{StateDir: filepath.Join(dir, "state")} })
	out := filepath.Join(dir, "out")
	_, err := ps[0].m.Get(info.Hash(), out, GetOptions{Info: info})
	var ns *NoSpaceError
	if !errors.As(err, &ns) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Get of 3 MiB with 1 MiB free: %v; want a NoSpaceError", err)
	}
	part := filepath.Join(out, info.Name+".part")
	if want := "not enough disk space for " + part + ": need 3.0 MiB more, 1.0 MiB free"; ns.Error() != want {
		t.Fatalf("error %q, want %q", ns.Error(), want)
	}
	if _, err := os.Lstat(part); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s was made for a download that does not fit (%v)", part, err)
	}
	if ps[0].m.Swarm(info.Hash()) != nil {
		t.Fatal("a swarm was added for a download that does not fit")
	}
}

// A state file that cannot be saved for lack of space keeps the copy
// saved before, whole, and leaves no temporary file behind. It needs a
// small tmpfs, so root.
func TestFullDiskStateSaveKeepsOldState(t *testing.T) {
	disk := smallDisk(t, "64k")
	path := filepath.Join(disk, "state.json")
	old := []byte(`{"name":"data.bin","have":"/w=="}`)
	if err := writeAtomic(path, old); err != nil {
		t.Fatal(err)
	}
	// Fill the rest of the disk.
	ballast, err := os.Create(filepath.Join(disk, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4<<10)
	for {
		if _, err := ballast.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			break
		}
	}
	ballast.Close()
	err = writeAtomic(path, bytes.Repeat([]byte("x"), 16<<10))
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space left on device") ||
		!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "kept") {
		t.Fatalf("saving into a full disk: %v; want an error naming %s, the full disk and that the old copy is kept", err, path)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the old state file is now %q (%v); want it as it was", got, err)
	}
	left, _ := filepath.Glob(filepath.Join(disk, ".state.json.*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

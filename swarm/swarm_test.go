package swarm

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/meta"
)

func writeFile(t *testing.T, path string, size int64, seed uint64) []byte {
	t.Helper()
	if _, err := WriteSample(path, size, seed); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Pieces that straddle files are read from and written to the right places.
func TestStorageAcrossFiles(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tree")
	a := writeFile(t, filepath.Join(src, "a.bin"), 100<<10+3, 1)
	writeFile(t, filepath.Join(src, "b", "empty.bin"), 0, 2)
	c := writeFile(t, filepath.Join(src, "b", "c.bin"), 300<<10+7, 3)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	from, err := OpenStorage(info, src, false)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	dst := filepath.Join(t.TempDir(), "copy")
	to, err := OpenStorage(info, dst, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range info.NumPieces() {
		if ok, err := from.Verify(i); err != nil || !ok {
			t.Fatalf("piece %d of the source does not verify: %v", i, err)
		}
		if ok, _ := to.Verify(i); ok {
			t.Fatalf("piece %d verifies before it was written", i)
		}
		buf := make([]byte, info.PieceSize(i))
		if err := from.ReadBlock(i, 0, buf); err != nil {
			t.Fatal(err)
		}
		// Write it in two uneven halves.
		h := len(buf) / 3
		if err := to.WriteBlock(i, 0, buf[:h]); err != nil {
			t.Fatal(err)
		}
		if err := to.WriteBlock(i, int64(h), buf[h:]); err != nil {
			t.Fatal(err)
		}
		if ok, err := to.Verify(i); err != nil || !ok {
			t.Fatalf("piece %d does not verify after writing: %v", i, err)
		}
	}
	if err := to.WriteBlock(0, info.PieceLength-1, []byte{1, 2}); err == nil {
		t.Error("a block past the end of its piece was written")
	}
	if err := from.WriteBlock(0, 0, []byte{1}); err == nil {
		t.Error("a read-only storage took a write")
	}
	to.Close()
	for name, want := range map[string][]byte{"a.bin": a, "b/c.bin": c, "b/empty.bin": {}} {
		got, err := os.ReadFile(filepath.Join(dst, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs after copying piece by piece (%v)", name, err)
		}
	}
}

type testPeer struct {
	h host.Host
	m *Manager
}

func startPeers(t *testing.T, n int, cfg func(i int) Config) []testPeer {
	t.Helper()
	hosts, err := p2phost.Loopback(n, "tcp")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]testPeer, n)
	for i, h := range hosts {
		out[i] = testPeer{h: h, m: NewManager(h, nil, cfg(i))}
	}
	t.Cleanup(func() {
		for _, p := range out {
			p.m.Close()
			p.h.Close()
		}
	})
	return out
}

func ids(ps []testPeer) []peer.ID {
	var out []peer.ID
	for _, p := range ps {
		out = append(out, p.h.ID())
	}
	return out
}

// leech starts a download of info on each of ps into dir/leech/<a, b, ...>,
// each told of the peers known.
func leech(t *testing.T, ps []testPeer, info *meta.Info, dir string, known []peer.ID) []*Swarm {
	t.Helper()
	var out []*Swarm
	for i, p := range ps {
		s, err := p.m.Get(info.Hash(), filepath.Join(dir, "leech", string(rune('a'+i))), GetOptions{Info: info})
		if err != nil {
			t.Fatal(err)
		}
		s.AddPeers(known...)
		out = append(out, s)
	}
	return out
}

func waitDone(t *testing.T, s *Swarm, limit time.Duration) {
	t.Helper()
	select {
	case <-s.Done():
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
	case <-time.After(limit):
		t.Fatalf("not done after %s: %+v", limit, s.Status())
	}
}

// Leechers get a byte-identical copy even when one of the two seeds serves
// corrupt data; the corrupt one is banned by whoever it sent data to.
func TestSwarmBansCorruptSeed(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good", "data.bin")
	want := writeFile(t, good, 2<<20, 7)
	info, err := meta.Build(good, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad", "data.bin")
	corrupt := append([]byte(nil), want...)
	for i := 100; i < len(corrupt); i += 64 << 10 {
		corrupt[i] ^= 0xff // one flipped byte in every piece
	}
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	// The good seed is slow, so the leechers ask the corrupt one too.
	ps := startPeers(t, 5, func(i int) Config {
		if i == 0 {
			return Config{UploadRate: 1 << 20}
		}
		return Config{}
	})
	if _, err := ps[0].m.Seed(info, good, ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ps[1].m.Seed(info, bad, ShareOptions{NoSuperSeed: true}); err != nil {
		t.Fatal(err)
	}
	leechers := leech(t, ps[2:], info, dir, ids(ps))
	banned := 0
	for _, s := range leechers {
		waitDone(t, s, 60*time.Second)
		got, err := os.ReadFile(s.Path())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the original (%v)", s.Path(), err)
		}
		s.mu.Lock()
		if s.banned[ps[1].h.ID()] != "" {
			banned++
		}
		if s.banned[ps[0].h.ID()] != "" {
			t.Errorf("the good seed was banned: %s", s.banned[ps[0].h.ID()])
		}
		s.mu.Unlock()
	}
	if banned == 0 {
		t.Error("no leecher banned the seed that served corrupt pieces")
	}
}

// A download stopped half-way resumes from the pieces it had, and the
// file takes its final name only once complete.
func TestSwarmResumes(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "seed", "data.bin")
	want := writeFile(t, src, 4<<20, 9)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	ps := startPeers(t, 2, func(i int) Config {
		if i == 0 {
			return Config{UploadRate: 2 << 20}
		}
		return Config{StateDir: state}
	})
	if _, err := ps[0].m.Seed(info, src, ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	s, err := ps[1].m.Get(info.Hash(), out, GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	s.AddPeers(ps[0].h.ID())
	testwait.Until(t, 30*time.Second, func() error {
		if st := s.Status(); st.Have < info.NumPieces()/3 {
			return fmt.Errorf("a third of the pieces not in yet: %+v", st)
		}
		return nil
	})
	if err := ps[1].m.Close(); err != nil {
		t.Fatal(err)
	}
	had := s.Status().Have
	final := filepath.Join(out, info.Name)
	if _, err := os.Stat(final); err == nil {
		t.Fatal("the final name exists before the download completed")
	}
	if _, err := os.Stat(final + ".part"); err != nil {
		t.Fatalf("no partial data after stopping: %v", err)
	}
	// A new manager on the same host and state picks it up.
	m2 := NewManager(ps[1].h, nil, Config{StateDir: state})
	defer m2.Close()
	resumed, errs := m2.Resume()
	if len(errs) > 0 || len(resumed) != 1 {
		t.Fatalf("resume: %v %v", resumed, errs)
	}
	s2 := resumed[0]
	if got := s2.Status().Have; got < had || got == 0 {
		t.Fatalf("resumed with %d pieces, had %d", got, had)
	}
	s2.AddPeers(ps[0].h.ID())
	waitDone(t, s2, 60*time.Second)
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("resumed download differs from the original (%v)", err)
	}
	if d := s2.Status().Downloaded; d >= info.TotalLength() {
		t.Errorf("downloaded %d bytes after resuming: the whole file again", d)
	}
	// Fetching again into the same place is refused, and nothing changes.
	if _, err := m2.Get(meta.InfoHash{1}, out, GetOptions{}); err != nil {
		t.Fatalf("a new swarm without manifest should start: %v", err)
	}
	m3 := NewManager(startPeers(t, 1, func(int) Config { return Config{} })[0].h, nil, Config{})
	defer m3.Close()
	if _, err := m3.Get(info.Hash(), out, GetOptions{Info: info}); err == nil {
		t.Error("a download over an existing file was accepted")
	}
}

// Leechers that were told only of the seed meet each other through it: the
// seed tells its peers of newcomers in batches.
func TestPEXIntroducesCrowd(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 2<<20, 3)
	// A slow seed keeps the leechers busy long enough to meet.
	ps := startPeers(t, 6, func(i int) Config {
		if i == 0 {
			return Config{UploadRate: 512 << 10}
		}
		return Config{}
	})
	if _, err := ps[0].m.Seed(info, src, ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	var leechers []*Swarm
	for i, p := range ps[1:] {
		s, err := p.m.Get(info.Hash(), filepath.Join(dir, "leech", string(rune('a'+i))), GetOptions{Info: info})
		if err != nil {
			t.Fatal(err)
		}
		s.AddPeers(ps[0].h.ID())
		leechers = append(leechers, s)
	}
	testwait.Until(t, 20*time.Second, func() error {
		for i, s := range leechers {
			if n := s.Status().Peers; n < len(ps)-1 {
				return fmt.Errorf("leecher %d has %d peers, want the seed and the %d other leechers", i, n, len(ps)-2)
			}
		}
		return nil
	})
	for _, s := range leechers {
		waitDone(t, s, 60*time.Second)
	}
}

// A peer that takes requests and then goes silent does not hold them: they
// move to a peer that serves, and the download ends long before the
// request timeout would have returned them to the pool.
func TestSwarmSilentPeerDoesNotHoldRequests(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "seed", "data.bin")
	want := writeFile(t, src, 1<<20, 11)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := startPeers(t, 3, func(i int) Config {
		if i == 0 {
			// One byte a second: the token bucket's burst lets four
			// blocks out, then nothing.
			return Config{UploadRate: 1}
		}
		return Config{}
	})
	for _, p := range ps[:2] {
		if _, err := p.m.Seed(info, src, ShareOptions{NoSuperSeed: true}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ps[2].m.Get(info.Hash(), filepath.Join(dir, "out"), GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	// First the silent peer alone, until it has taken requests and
	// stopped sending.
	s.AddPeers(ps[0].h.ID())
	testwait.Until(t, 10*time.Second, func() error {
		if s.Status().Downloaded == 0 {
			return fmt.Errorf("nothing from the silent peer yet")
		}
		return nil
	})
	s.mu.Lock()
	held := 0
	if c := s.conns[ps[0].h.ID()]; c != nil {
		held = len(c.asked)
	}
	s.mu.Unlock()
	if held == 0 {
		t.Fatal("the silent peer holds none of our requests; the test proves nothing")
	}
	s.AddPeers(ps[1].h.ID())
	// The bound only separates moving the requests from waiting out
	// requestTimeout; it is not a measure of speed.
	waitDone(t, s, requestTimeout/2)
	got, err := os.ReadFile(s.Path())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the copy differs from the original (%v)", err)
	}
}

// seedFile writes dir/seed/data.bin, size bytes made from seed, and
// builds its manifest in 64 KiB pieces.
func seedFile(t *testing.T, dir string, size int64, seed uint64) (string, *meta.Info) {
	t.Helper()
	src := filepath.Join(dir, "seed", "data.bin")
	writeFile(t, src, size, seed)
	info, err := meta.Build(src, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	return src, info
}

// StatusWithConns lists each connection with what it has and what flows.
func TestStatusWithConns(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 256<<10, 6)
	ps := startPeers(t, 2, func(int) Config { return Config{} })
	if _, err := ps[0].m.Seed(info, src, ShareOptions{NoSuperSeed: true}); err != nil {
		t.Fatal(err)
	}
	s, err := ps[1].m.Get(info.Hash(), filepath.Join(dir, "leech"), GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	s.AddPeers(ps[0].h.ID())
	waitDone(t, s, 20*time.Second)
	st := s.StatusWithConns()
	if len(st.Conns) != 1 {
		t.Fatalf("%d connections listed, want the seed's", len(st.Conns))
	}
	c := st.Conns[0]
	if c.Peer != ps[0].h.ID().String() || !c.HaveAll && c.Pieces != info.NumPieces() || c.Asked != 0 {
		t.Fatalf("the seed's connection: %+v", c)
	}
	if plain := s.Status(); plain.Conns != nil {
		t.Fatal("Status lists connections")
	}
}

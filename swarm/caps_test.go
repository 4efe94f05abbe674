package swarm

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/testwait"
)

// unchoked counts the peers s uploads to now.
func unchoked(s *Swarm) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		if !c.amChoking {
			n++
		}
	}
	return n
}

// A file shared with a cap of its own, on a peer with no global cap, fills
// that cap: when the regular slots cannot absorb it (every leecher here can
// take only an eighth of it, and the leechers can pass little on), the
// choker opens extra slots, as it does under a global cap.
func TestPerFileCapIsFilled(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 24<<20, 5)
	const fileCap = 1 << 20
	const leechers = 8
	ps := startPeers(t, leechers+1, func(i int) Config {
		if i == 0 {
			return Config{} // no global cap: only the file's own
		}
		return Config{DownloadRate: fileCap / leechers, UploadRate: 16 << 10}
	})
	seed, err := ps[0].m.Seed(info, src, ShareOptions{UploadRate: fileCap})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps[1:] {
		s, err := p.m.Get(info.Hash(), filepath.Join(dir, "leech", fmt.Sprint(i)), GetOptions{Info: info})
		if err != nil {
			t.Fatal(err)
		}
		s.AddPeers(ps[0].h.ID())
	}
	// Past the start (when nothing has been measured and every slot is
	// open), measure the seeder's upload over a few seconds.
	testwait.Until(t, 30*time.Second, func() error {
		if up := seed.Status().Uploaded; up < 3*fileCap {
			return fmt.Errorf("the seeder has uploaded %d B, waiting for %d", up, 3*fileCap)
		}
		return nil
	})
	from, fromT := seed.Status().Uploaded, time.Now()
	most := 0
	testwait.Until(t, 30*time.Second, func() error {
		most = max(most, unchoked(seed))
		if d := time.Since(fromT); d < 4*time.Second {
			return fmt.Errorf("measuring: %s of 4 s", d.Round(time.Millisecond))
		}
		return nil
	})
	rate := float64(seed.Status().Uploaded-from) / time.Since(fromT).Seconds()
	t.Logf("the seeder unchoked up to %d peers and uploaded %.0f B/s of a %d B/s cap", most, rate, fileCap)
	// 4 regular slots and 1 optimistic carry 5/8 of the cap at most here;
	// more is only possible through extra slots.
	if rate < 0.7*fileCap || most <= 5 {
		t.Fatalf("the file's cap is not filled: %.0f B/s of %d B/s through %d unchoked peers", rate, fileCap, most)
	}
}

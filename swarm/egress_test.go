package swarm

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm/wire"
)

// egressCrowd seeds 2 MiB with o to n leechers that all know each other
// and waits until every one holds a verified copy; it returns the seed's
// swarm.
func egressCrowd(t *testing.T, n int, o ShareOptions) *Swarm {
	t.Helper()
	dir := t.TempDir()
	src, info := seedFile(t, dir, 2<<20, 21)
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// The seed uploads 2 MiB/s and each leecher 512 KiB/s: left to
	// itself, the seed carries about twice the file.
	ps := startPeers(t, n+1, func(i int) Config {
		if i == 0 {
			return Config{UploadRate: 2 << 20}
		}
		return Config{UploadRate: 512 << 10}
	})
	seed, err := ps[0].m.Seed(info, src, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range leech(t, ps[1:], info, dir, ids(ps)) {
		waitDone(t, s, 60*time.Second)
		got, err := os.ReadFile(s.Path())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("a leecher's copy differs from the original (%v)", err)
		}
	}
	return seed
}

// Under an egress budget the seed uploads no more than it allows, and
// every leecher still ends with a verified copy; without one, the same
// crowd takes more from the seed (so the bound is what held it).
func TestEgressBudgetBoundsTheSeed(t *testing.T) {
	const copies = 1.2
	bounded := egressCrowd(t, 5, ShareOptions{EgressCopies: copies})
	size := bounded.Info().TotalLength()
	up := bounded.Status().Uploaded
	if limit := int64(copies * float64(size)); up > limit {
		t.Fatalf("the seed uploaded %.2f copies under a budget of %.1f", float64(up)/float64(size), copies)
	}
	if up < size {
		t.Fatalf("the seed uploaded %.2f copies: less than every piece once", float64(up)/float64(size))
	}
	free := egressCrowd(t, 5, ShareOptions{})
	if fu := free.Status().Uploaded; fu <= int64(copies*float64(size)) {
		t.Fatalf("without a budget the seed uploaded %.2f copies: the crowd does not show the bound at work", float64(fu)/float64(size))
	}
}

// Lifting the budget shows every piece to the seed's peers at once, and a
// swarm without one has nothing to lift.
func TestLiftEgressBudget(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 256<<10, 22)
	ps := startPeers(t, 1, func(int) Config { return Config{} })
	s, err := ps[0].m.Seed(info, src, ShareOptions{EgressCopies: 1.5})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.EgressBudget(), int64(1.5*float64(info.TotalLength())); got != want {
		t.Fatalf("budget %d bytes, want %d", got, want)
	}
	s.mu.Lock()
	for i := range s.inSwarm {
		s.inSwarmLocked(i)
	}
	still := s.superSeed
	s.mu.Unlock()
	if !still {
		t.Fatal("super-seeding ended once every piece was out, with budget left to offer")
	}
	if !s.LiftEgressBudget() || s.EgressBudget() != 0 {
		t.Fatal("the budget was not lifted")
	}
	if s.Status().SuperSeeded {
		t.Fatal("still super-seeding after the budget was lifted with every piece out")
	}
	if s.LiftEgressBudget() {
		t.Fatal("a second lift reported a budget")
	}
}

// Pieces that went with a peer that is gone are offered again, budget or
// not: the seed gave every piece to A alone and had spent its budget, A
// left, and B still gets the file.
func TestEgressBudgetReoffersWhatLeftWithAPeer(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 512<<10, 23)
	ps := startPeers(t, 3, func(int) Config { return Config{} })
	seed, err := ps[0].m.Seed(info, src, ShareOptions{EgressCopies: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := leech(t, ps[1:2], info, filepath.Join(dir, "a"), ids(ps[:1]))[0]
	waitDone(t, a, 30*time.Second)
	if up, size := seed.Status().Uploaded, info.TotalLength(); up != size {
		t.Fatalf("the seed uploaded %d bytes to its one peer, want the file's %d", up, size)
	}
	ps[1].m.Close()
	testwait.Until(t, 10*time.Second, func() error {
		if n := seed.Status().Peers; n != 0 {
			return fmt.Errorf("the seed still has %d peers", n)
		}
		return nil
	})
	b := leech(t, ps[2:], info, filepath.Join(dir, "b"), ids(ps[:1]))[0]
	waitDone(t, b, 30*time.Second)
}

// A piece on offer to a peer the seed chokes goes to a peer that can ask
// for it: the first pass offers each piece to one peer at a time, and a
// choked peer held its pieces out of the swarm (every target of an 8-peer
// job stalled a few pieces short). A choked peer that already wants what
// it was shown is shown nothing more.
func TestEgressBudgetChokedPeerGivesBackItsOffers(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 256<<10, 24) // 4 pieces
	ps := startPeers(t, 1, func(int) Config { return Config{} })
	s, err := ps[0].m.Seed(info, src, ShareOptions{EgressCopies: 1.2})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer clear(s.conns) // fakes, with no stream to close
	fake := func(name string) *conn {
		c := &conn{s: s, p: peer.ID(name), out: make(chan *wire.Message, 64),
			offered: make(map[int]bool), bits: wire.NewBits(info.NumPieces())}
		s.conns[c.p] = c
		return c
	}
	a, b, c := fake("a"), fake("b"), fake("c")
	s.offerLocked(a)
	s.offerLocked(b)
	s.offerLocked(c)
	if len(a.offered) != 2 || len(b.offered) != 2 || len(c.offered) != 0 {
		t.Fatalf("first pass: offers %v, %v, %v; want 2, 2 and none (each piece to one peer)", a.offered, b.offered, c.offered)
	}
	held := maps.Clone(a.offered)
	a.amChoking, a.peerInterested = true, true
	s.releaseOffersLocked(a)
	if len(a.offered) != 0 || !maps.Equal(c.offered, held) {
		t.Fatalf("after choking a: a has %v, c has %v; want none, and c a's %v", a.offered, c.offered, held)
	}
	s.offerLocked(a)
	if len(a.offered) != 0 {
		t.Fatalf("a choked and interested was offered %v", a.offered)
	}
}

// A crowd larger than the seed's unchoke slots, where the seed chokes
// peers it has offered pieces to, still ends with every copy verified and
// the seed near its budget.
func TestEgressBudgetCrowdBeyondTheUnchokeSlots(t *testing.T) {
	seed := egressCrowd(t, 10, ShareOptions{EgressCopies: 1.2})
	if up, size := seed.Status().Uploaded, seed.Info().TotalLength(); up > size*13/10 {
		t.Fatalf("the seed uploaded %.2f copies", float64(up)/float64(size))
	}
}

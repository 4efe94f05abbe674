package picker

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func newPicker(seed uint64, n int, pieceLen, total int64, bs, randomFirst int) *Picker {
	return New(Config{
		NumPieces:   n,
		PieceLength: pieceLen,
		TotalLength: total,
		BlockSize:   bs,
		RandomFirst: randomFirst,
		Rand:        rand.New(rand.NewPCG(seed, 0)),
	})
}

func TestRandomFirstThenRarest(t *testing.T) {
	const n, rare = 20, 7
	setup := func(seed uint64) *Picker {
		p := newPicker(seed, n, 16, 16*n, 16, 2)
		p.PeerBitfield("r", func(int) bool { return true })
		for _, id := range []string{"a", "b", "c"} {
			p.PeerBitfield(id, func(i int) bool { return i != rare })
		}
		return p
	}
	p := setup(1)
	if got := p.Availability(rare); got != 1 {
		t.Fatalf("Availability(rare) = %d, want 1", got)
	}
	if got := p.Availability(0); got != 4 {
		t.Fatalf("Availability(0) = %d, want 4", got)
	}

	// Random first: the first pick varies with the seed and is not always the rarest.
	seen := map[int]int{}
	for seed := uint64(0); seed < 100; seed++ {
		bl := setup(seed).Pick("r", 1)
		if len(bl) != 1 {
			t.Fatalf("seed %d: Pick = %v", seed, bl)
		}
		seen[bl[0].Piece]++
	}
	if len(seen) < 10 || seen[rare] > 20 {
		t.Fatalf("random-first picks are not spread: %v", seen)
	}

	// Once RandomFirst pieces are verified, the rarest piece comes first.
	for seed := uint64(0); seed < 20; seed++ {
		p := setup(seed)
		for k := 0; k < 2; k++ {
			bl := p.Pick("r", 1)
			if len(bl) != 1 {
				t.Fatalf("Pick = %v", bl)
			}
			if done, _ := p.Received("r", bl[0]); !done {
				t.Fatalf("one-block piece not complete")
			}
			p.Verified(bl[0].Piece)
		}
		if p.Have(rare) {
			continue // the random phase happened to take it
		}
		if bl := p.Pick("r", 1); len(bl) != 1 || bl[0].Piece != rare {
			t.Fatalf("seed %d: rarest-first picked %v, want piece %d", seed, bl, rare)
		}
		// A peer without the rarest piece gets something else.
		if bl := p.Pick("a", 1); len(bl) != 1 || bl[0].Piece == rare {
			t.Fatalf("seed %d: peer lacking the rarest piece got %v", seed, bl)
		}
	}
}

func TestRarestAmongPeersPieces(t *testing.T) {
	// Availabilities 1..n: piece i is held by peers 0..n-1-i. Each peer must
	// get the rarest piece it has.
	const n = 8
	p := newPicker(3, n, 16, 16*n, 16, -1)
	for k := 0; k < n; k++ {
		p.PeerBitfield(fmt.Sprint("p", k), func(i int) bool { return k <= n-1-i })
	}
	for i := 0; i < n; i++ {
		if got := p.Availability(i); got != n-i {
			t.Fatalf("Availability(%d) = %d, want %d", i, got, n-i)
		}
	}
	for k := n - 1; k >= 0; k-- {
		bl := p.Pick(fmt.Sprint("p", k), 1)
		if want := n - 1 - k; len(bl) != 1 || bl[0].Piece != want {
			t.Fatalf("p%d picked %v, want piece %d", k, bl, want)
		}
	}
	// Incremental maintenance.
	p.PeerGone("p0")
	p.PeerHave("p7", 5)
	p.PeerHave("p7", 5)
	p.PeerHaveAll("seed")
	p.PeerHave("seed", 5)
	if got := p.Availability(7); got != 1 { // p0 gone, seed came
		t.Fatalf("Availability(7) = %d, want 1", got)
	}
	if got := p.Availability(5); got != 4 { // p0..p2, minus p0, plus p7 and seed
		t.Fatalf("Availability(5) = %d, want 4", got)
	}
	p.PeerBitfield("seed", func(i int) bool { return i == 3 })
	if got := p.Availability(7); got != 0 {
		t.Fatalf("Availability(7) after bitfield replace = %d, want 0", got)
	}
}

func TestStrictPriority(t *testing.T) {
	// 8 pieces of 4 blocks.
	p := newPicker(5, 8, 64, 512, 16, -1)
	for _, id := range []string{"a", "b", "e"} {
		p.PeerHaveAll(id)
	}
	first := p.Pick("a", 2)
	if len(first) != 2 || first[0].Piece != first[1].Piece {
		t.Fatalf("Pick(a, 2) = %v, want two blocks of one piece", first)
	}
	x := first[0].Piece
	// d lacks x: it starts another piece y.
	p.PeerBitfield("d", func(i int) bool { return i != x })
	second := p.Pick("d", 1)
	if len(second) != 1 || second[0].Piece == x {
		t.Fatalf("Pick(d, 1) = %v", second)
	}
	y := second[0].Piece
	// e has everything: x's remaining blocks, then y's, then a new piece.
	got := p.Pick("e", 6)
	want := []Block{{x, 32, 16}, {x, 48, 16}, {y, 16, 16}, {y, 32, 16}, {y, 48, 16}}
	if len(got) != 6 || !slices.Equal(got[:5], want) || got[5].Piece == x || got[5].Piece == y || got[5].Begin != 0 {
		t.Fatalf("Pick(e, 6) = %v, want %v then block 0 of a new piece", got, want)
	}
	if p.Outstanding("e") != 6 || p.Outstanding("a") != 2 {
		t.Fatalf("Outstanding e=%d a=%d", p.Outstanding("e"), p.Outstanding("a"))
	}
}

func TestNeverLackedOrHad(t *testing.T) {
	const n = 64
	p := newPicker(7, n, 32, 32*n, 16, 0)
	for i := 0; i < n; i += 3 {
		p.SetHave(i)
	}
	has := func(i int) bool { return i%2 == 0 }
	p.PeerBitfield("a", has)
	if !p.Interesting("a") {
		t.Fatal("a should be interesting")
	}
	got := p.Pick("a", 1000)
	var count int
	for i := 0; i < n; i++ {
		if has(i) && i%3 != 0 {
			count++
		}
	}
	if len(got) != 2*count {
		t.Fatalf("Pick returned %d blocks, want %d", len(got), 2*count)
	}
	for _, b := range got {
		if !has(b.Piece) || p.Have(b.Piece) {
			t.Fatalf("picked %v: peer has=%v we have=%v", b, has(b.Piece), p.Have(b.Piece))
		}
	}
	if bl := p.Pick("a", 10); len(bl) != 0 {
		t.Fatalf("second Pick duplicated own requests: %v", bl)
	}
	for _, b := range got {
		if done, _ := p.Received("a", b); done {
			p.Verified(b.Piece)
		}
	}
	if p.Interesting("a") {
		t.Fatal("a should no longer be interesting")
	}
	if p.Missing() != n-n/3-1-count {
		t.Fatalf("Missing = %d", p.Missing())
	}
	if bl := p.Pick("nobody", 10); bl != nil {
		t.Fatalf("unknown peer got %v", bl)
	}
}

func TestReturnToPool(t *testing.T) {
	// 2 pieces of 4 blocks.
	p := newPicker(9, 2, 64, 128, 16, 0)
	p.PeerHaveAll("a")
	p.PeerHaveAll("b")
	all := p.Pick("a", 100)
	if len(all) != 8 || p.Outstanding("a") != 8 || !p.Endgame() {
		t.Fatalf("Pick(a) = %v, endgame %v", all, p.Endgame())
	}

	p.PeerChoked("a")
	if p.Outstanding("a") != 0 || p.Endgame() {
		t.Fatalf("after choke: outstanding %d endgame %v", p.Outstanding("a"), p.Endgame())
	}
	got := p.Pick("b", 100)
	if len(got) != 8 {
		t.Fatalf("Pick(b) after a choked = %v", got)
	}

	p.Rejected("b", got[3])
	if p.Outstanding("b") != 7 {
		t.Fatalf("Outstanding(b) after reject = %d", p.Outstanding("b"))
	}
	if again := p.Pick("a", 1); len(again) != 1 || again[0] != got[3] {
		t.Fatalf("Pick(a) after reject = %v, want %v", again, got[3])
	}

	p.Received("b", got[0])
	p.PeerGone("b")
	if p.Availability(0) != 1 || p.Outstanding("b") != 0 || p.Interesting("b") {
		t.Fatalf("after PeerGone: availability %d", p.Availability(0))
	}
	rest := p.Pick("a", 100)
	if len(rest) != 6 {
		t.Fatalf("Pick(a) after b gone = %v, want 6 blocks", rest)
	}
	for _, b := range rest {
		if b == got[0] || b == got[3] {
			t.Fatalf("received or already outstanding block handed out again: %v", b)
		}
	}
	// Verifying a piece drops the requests still outstanding for it.
	p.Verified(0)
	p.Verified(1)
	if p.Outstanding("a") != 0 || !p.Done() {
		t.Fatalf("after Verified: outstanding %d done %v", p.Outstanding("a"), p.Done())
	}
}

func TestEndgame(t *testing.T) {
	// 2 pieces of 2 blocks.
	p := newPicker(11, 2, 32, 64, 16, 0)
	for _, id := range []string{"a", "b", "c"} {
		p.PeerHaveAll(id)
	}
	if p.Endgame() {
		t.Fatal("endgame at start")
	}
	all := p.Pick("a", 10)
	if len(all) != 4 || !p.Endgame() {
		t.Fatalf("Pick(a) = %v endgame=%v", all, p.Endgame())
	}
	if bl := p.Pick("a", 10); len(bl) != 0 {
		t.Fatalf("endgame duplicated a block on the same peer: %v", bl)
	}
	bdup := p.Pick("b", 2)
	if len(bdup) != 2 {
		t.Fatalf("Pick(b) in endgame = %v", bdup)
	}
	cdup := p.Pick("c", 4)
	if len(cdup) != 4 {
		t.Fatalf("Pick(c) in endgame = %v", cdup)
	}
	// c prefers the blocks with a single copy.
	for _, b := range cdup[:2] {
		if slices.Contains(bdup, b) {
			t.Fatalf("c got %v first, which has two copies already (c got %v, b has %v)", b, cdup, bdup)
		}
	}
	done, cancel := p.Received("b", bdup[0])
	slices.Sort(cancel)
	if done || !slices.Equal(cancel, []string{"a", "c"}) {
		t.Fatalf("Received = %v %v, want false [a c]", done, cancel)
	}
	if p.Outstanding("a") != 3 || p.Outstanding("b") != 1 || p.Outstanding("c") != 3 {
		t.Fatalf("outstanding a=%d b=%d c=%d", p.Outstanding("a"), p.Outstanding("b"), p.Outstanding("c"))
	}
	// A late copy of a received block is ignored.
	if done, cancel := p.Received("a", bdup[0]); done || cancel != nil {
		t.Fatalf("duplicate Received = %v %v", done, cancel)
	}
	// Receiving the rest completes both pieces.
	completed := 0
	for _, b := range all {
		if done, _ := p.Received("a", b); done {
			completed++
			p.Verified(b.Piece)
		}
	}
	if completed != 2 || !p.Done() || p.Endgame() {
		t.Fatalf("completed %d, done %v", completed, p.Done())
	}
	for _, id := range []string{"a", "b", "c"} {
		if p.Outstanding(id) != 0 {
			t.Fatalf("Outstanding(%s) = %d after done", id, p.Outstanding(id))
		}
	}
}

func TestFailed(t *testing.T) {
	p := newPicker(13, 1, 32, 32, 16, 0)
	p.PeerHaveAll("a")
	p.PeerHaveAll("b")
	ba := p.Pick("a", 1)
	bb := p.Pick("b", 1)
	if len(ba) != 1 || len(bb) != 1 || ba[0] == bb[0] {
		t.Fatalf("picks a=%v b=%v", ba, bb)
	}
	if done, _ := p.Received("b", bb[0]); done {
		t.Fatal("complete after one block of two")
	}
	if done, _ := p.Received("a", ba[0]); !done {
		t.Fatal("not complete after both blocks")
	}
	if c := p.Failed(0); !slices.Equal(c, []string{"a", "b"}) {
		t.Fatalf("Failed contributors = %v", c)
	}
	if p.Have(0) || p.Missing() != 1 || p.Endgame() {
		t.Fatalf("after Failed: have %v missing %d", p.Have(0), p.Missing())
	}
	again := p.Pick("a", 10)
	if len(again) != 2 {
		t.Fatalf("Pick after Failed = %v", again)
	}
	p.Received("a", again[0])
	if done, _ := p.Received("a", again[1]); !done {
		t.Fatal("not complete after refetch")
	}
	if c := p.Failed(0); !slices.Equal(c, []string{"a"}) {
		t.Fatalf("second Failed contributors = %v", c)
	}
	// An unrequested block that is still needed is accepted.
	if done, _ := p.Received("c", Block{0, 0, 16}); done {
		t.Fatal("complete after one block")
	}
	if bl := p.Pick("b", 10); len(bl) != 1 || bl[0] != (Block{0, 16, 16}) {
		t.Fatalf("Pick after unrequested block = %v", bl)
	}
	if done, _ := p.Received("b", Block{0, 16, 16}); !done {
		t.Fatal("not complete")
	}
	p.Verified(0)
	if !p.Done() {
		t.Fatal("not done")
	}
	if done, cancel := p.Received("a", Block{0, 0, 16}); done || cancel != nil {
		t.Fatal("block of a piece we have accepted")
	}
	if c := p.Failed(0); c != nil {
		t.Fatalf("Failed on a verified piece = %v", c)
	}
}

func TestShortLastPiece(t *testing.T) {
	const bs = 16 << 10
	p := newPicker(17, 3, 40000, 100000, 0, 0)
	p.PeerHaveAll("a")
	got := p.Pick("a", 100)
	slices.SortFunc(got, func(x, y Block) int { return (x.Piece*1e6 + x.Begin) - (y.Piece*1e6 + y.Begin) })
	want := []Block{
		{0, 0, bs}, {0, bs, bs}, {0, 2 * bs, 40000 - 2*bs},
		{1, 0, bs}, {1, bs, bs}, {1, 2 * bs, 40000 - 2*bs},
		{2, 0, bs}, {2, bs, 20000 - bs},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("blocks %v, want %v", got, want)
	}
	if done, _ := p.Received("a", Block{2, bs, bs}); done {
		t.Fatal("accepted a block with a wrong length")
	}
	p.Received("a", want[6])
	if done, _ := p.Received("a", want[7]); !done {
		t.Fatal("short last piece not complete")
	}
}

// simulate downloads a torrent from 5 peers with random bitfields that serve
// every request (cancels are honoured at once), and returns a log of the picks
// and the number of endgame duplicates.
func simulate(t testing.TB, seed uint64) (string, int) {
	const n, bs, depth = 97, 16, 5
	const pieceLen, total = 4 * bs, 96*4*bs + 40 // last piece: 16+16+8
	p := newPicker(seed, n, pieceLen, total, bs, 0)
	rng := rand.New(rand.NewPCG(seed, 1))
	ids := []string{"p0", "p1", "p2", "p3", "p4"}
	has := map[string][]bool{}
	for _, id := range ids {
		has[id] = make([]bool, n)
		for i := range has[id] {
			has[id][i] = rng.IntN(2) == 0
		}
	}
	for i := 0; i < n; i++ {
		has[ids[rng.IntN(len(ids))]][i] = true // nobody-has is impossible
	}
	for _, id := range ids {
		p.PeerBitfield(id, func(i int) bool { return has[id][i] })
	}
	pending := map[string][]Block{}
	received := map[Block]int{}
	dups := 0 // endgame requests duplicating another peer's
	var log strings.Builder
	for round := 0; !p.Done(); round++ {
		if round > 100000 {
			t.Fatalf("no progress: missing %d", p.Missing())
		}
		for _, id := range ids {
			bl := p.Pick(id, depth-len(pending[id]))
			fmt.Fprintln(&log, id, bl)
			for _, b := range bl {
				if !has[id][b.Piece] || p.Have(b.Piece) || slices.Contains(pending[id], b) {
					t.Fatalf("%s picked %v: peer has %v, we have %v", id, b, has[id][b.Piece], p.Have(b.Piece))
				}
				for _, other := range ids {
					if slices.Contains(pending[other], b) && !p.Endgame() {
						t.Fatalf("%v duplicated outside endgame", b)
					}
					if slices.Contains(pending[other], b) {
						dups++
					}
				}
			}
			pending[id] = append(pending[id], bl...)
			if len(pending[id]) != p.Outstanding(id) {
				t.Fatalf("%s: %d pending, Outstanding %d", id, len(pending[id]), p.Outstanding(id))
			}
		}
		for _, id := range ids {
			serve := min(len(pending[id]), 1+rng.IntN(3))
			for _, b := range pending[id][:serve] {
				if rng.IntN(20) == 0 {
					p.Rejected(id, b)
					continue
				}
				received[b]++
				done, cancel := p.Received(id, b)
				for _, o := range cancel {
					pending[o] = slices.DeleteFunc(pending[o], func(x Block) bool { return x == b })
				}
				if done {
					p.Verified(b.Piece)
				}
			}
			pending[id] = pending[id][serve:]
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j*bs < int(p.length(i)); j++ {
			if b := p.block(i, j); received[b] != 1 {
				t.Fatalf("block %v received %d times", b, received[b])
			}
		}
	}
	return log.String(), dups
}

func TestSimulatedDownload(t *testing.T) {
	dups := 0
	for seed := uint64(1); seed <= 20; seed++ {
		_, d := simulate(t, seed)
		dups += d
	}
	if dups == 0 {
		t.Fatal("endgame never duplicated a request")
	}
}

func TestDeterminism(t *testing.T) {
	a, _ := simulate(t, 42)
	b, _ := simulate(t, 42)
	c, _ := simulate(t, 43)
	if a != b {
		t.Fatal("same seed gave different picks")
	}
	if a == c {
		t.Fatal("different seeds gave identical picks")
	}
}

func BenchmarkPick(b *testing.B) {
	const n, bs, depth = 4096, 16 << 10, 16
	const pieceLen = 16 * bs
	ids := make([]string, 30)
	setup := func(seed uint64) *Picker {
		p := newPicker(seed, n, pieceLen, n*pieceLen, bs, 0)
		rng := rand.New(rand.NewPCG(seed, 1))
		for k := range ids {
			ids[k] = fmt.Sprint("peer", k)
			if k%10 == 0 {
				p.PeerHaveAll(ids[k])
				continue
			}
			p.PeerBitfield(ids[k], func(int) bool { return rng.IntN(3) != 0 })
		}
		return p
	}
	p := setup(0)
	b.ReportAllocs()
	b.ResetTimer()
	for k := 0; k < b.N; k++ {
		if p.Done() {
			b.StopTimer()
			p = setup(uint64(k))
			b.StartTimer()
		}
		id := ids[k%len(ids)]
		for _, blk := range p.Pick(id, depth) {
			if done, _ := p.Received(id, blk); done {
				p.Verified(blk.Piece)
			}
		}
	}
}

func TestSteal(t *testing.T) {
	// 4 pieces of 2 blocks. "z" has everything and is asked for all of
	// them; "x" has pieces 1 and 2 only.
	p := newPicker(1, 4, 32, 128, 16, -1)
	p.PeerHaveAll("z")
	p.PeerBitfield("x", func(i int) bool { return i == 1 || i == 2 })
	if got := p.Pick("z", 8); len(got) != 8 {
		t.Fatalf("Pick(z, 8) = %v, want every block", got)
	}
	// Nothing is stale: nothing moves.
	if out, _ := p.Steal("x", 8, func(string, Block) bool { return false }); len(out) != 0 {
		t.Fatalf("Steal with nothing stale = %v", out)
	}
	// z is stale: x takes the blocks of the pieces it has, and only those.
	out, from := p.Steal("x", 8, func(o string, b Block) bool {
		if o != "z" {
			t.Errorf("stale asked about %q", o)
		}
		return true
	})
	if len(out) != 4 {
		t.Fatalf("Steal took %v, want the 4 blocks of pieces 1 and 2", out)
	}
	for k, b := range out {
		if b.Piece != 1 && b.Piece != 2 {
			t.Fatalf("stole block %v of a piece x lacks", b)
		}
		if from[k] != "z" {
			t.Fatalf("from[%d] = %q, want z", k, from[k])
		}
	}
	if p.Outstanding("x") != len(out) || p.Outstanding("z") != 8-len(out) {
		t.Fatalf("outstanding x=%d z=%d after stealing %d", p.Outstanding("x"), p.Outstanding("z"), len(out))
	}
	// A stolen block arriving from x cancels nobody; one arriving late
	// from z is still taken (and tells x's copy to be cancelled).
	if _, cancel := p.Received("x", out[0]); len(cancel) != 0 {
		t.Fatalf("Received from x cancels %v", cancel)
	}
	if len(out) > 1 {
		if _, cancel := p.Received("z", out[1]); !slices.Equal(cancel, []string{"x"}) {
			t.Fatalf("late block from z cancels %v, want [x]", cancel)
		}
	}
	// Stealing never takes from the thief itself, and respects max.
	if again, _ := p.Steal("x", 8, func(string, Block) bool { return true }); len(again) != 0 {
		t.Fatalf("second Steal = %v", again)
	}
	q := newPicker(2, 4, 32, 128, 16, -1)
	q.PeerHaveAll("z")
	q.PeerHaveAll("x")
	q.Pick("z", 8)
	if out, _ := q.Steal("x", 3, func(string, Block) bool { return true }); len(out) != 3 {
		t.Fatalf("Steal(max 3) = %v", out)
	}
	// In the endgame a block outstanding from two peers is not stolen.
	if !q.Endgame() {
		t.Fatal("want endgame: every block is outstanding")
	}
	q.PeerHaveAll("y")
	q.Pick("y", 8) // duplicates: every block now has two owners
	q.PeerHaveAll("w")
	if out, _ := q.Steal("w", 8, func(string, Block) bool { return true }); len(out) != 0 {
		t.Fatalf("Steal of endgame blocks = %v", out)
	}
}

func TestEndgameOnlyStale(t *testing.T) {
	// 2 pieces of 2 blocks, all asked of "a"; only blocks of piece 1 are
	// stale at a.
	p := New(Config{
		NumPieces: 2, PieceLength: 32, TotalLength: 64, BlockSize: 16,
		Rand:  rand.New(rand.NewPCG(3, 0)),
		Stale: func(owner string, b Block) bool { return owner == "a" && b.Piece == 1 },
	})
	p.PeerHaveAll("a")
	p.PeerHaveAll("b")
	if got := p.Pick("a", 4); len(got) != 4 || !p.Endgame() {
		t.Fatalf("Pick(a) = %v, endgame %v", got, p.Endgame())
	}
	dup := p.Pick("b", 4)
	if len(dup) != 2 || dup[0].Piece != 1 || dup[1].Piece != 1 {
		t.Fatalf("endgame copies = %v, want the two blocks of piece 1 only", dup)
	}
}

func TestRemaining(t *testing.T) {
	// 3 pieces: 2 blocks, 2 blocks, 1 block (a short last piece).
	p := newPicker(5, 3, 32, 80, 16, -1)
	if p.Remaining() != 5 {
		t.Fatalf("Remaining = %d at start, want 5", p.Remaining())
	}
	p.SetHave(2) // resumed
	p.PeerHaveAll("a")
	bl := p.Pick("a", 4)
	if len(bl) != 4 || p.Remaining() != 4 {
		t.Fatalf("Pick = %v, Remaining = %d, want 4 blocks and 4", bl, p.Remaining())
	}
	p.Received("a", bl[0])
	p.Received("a", bl[0]) // a duplicate changes nothing
	if p.Remaining() != 3 {
		t.Fatalf("Remaining = %d after one block, want 3", p.Remaining())
	}
	// Completing a piece that fails its check puts its blocks back.
	var other Block
	for _, b := range bl[1:] {
		if b.Piece == bl[0].Piece {
			p.Received("a", b)
			p.Failed(b.Piece)
		} else {
			other = b
		}
	}
	if p.Remaining() != 4 {
		t.Fatalf("Remaining = %d after a failed piece, want 4", p.Remaining())
	}
	p.Verified(other.Piece) // verified without its blocks (another source)
	if p.Remaining() != 2 {
		t.Fatalf("Remaining = %d, want 2", p.Remaining())
	}
}

func TestEndgameMaxOwners(t *testing.T) {
	p := New(Config{
		NumPieces: 1, PieceLength: 32, TotalLength: 32, BlockSize: 16,
		Rand: rand.New(rand.NewPCG(4, 0)), MaxOwners: 2,
	})
	for _, id := range []string{"a", "b", "c"} {
		p.PeerHaveAll(id)
	}
	if got := p.Pick("a", 2); len(got) != 2 {
		t.Fatalf("Pick(a) = %v", got)
	}
	if got := p.Pick("b", 2); len(got) != 2 {
		t.Fatalf("endgame copies for b = %v, want both blocks", got)
	}
	if got := p.Pick("c", 2); len(got) != 0 {
		t.Fatalf("endgame copies for c = %v, want none: every block has two owners", got)
	}
	// Once b's copy of a block is cancelled (rejected), c may copy it.
	p.Rejected("b", Block{Piece: 0, Begin: 0, Length: 16})
	if got := p.Pick("c", 2); len(got) != 1 || got[0].Begin != 0 {
		t.Fatalf("Pick(c) after a rejection = %v, want block 0", got)
	}
}

func TestUnavailable(t *testing.T) {
	p := newPicker(6, 4, 16, 64, 16, -1)
	if got := p.Unavailable(); got != 4 {
		t.Fatalf("Unavailable = %d with no peers, want 4", got)
	}
	p.SetHave(0)
	p.PeerBitfield("a", func(i int) bool { return i == 1 })
	if got := p.Unavailable(); got != 2 {
		t.Fatalf("Unavailable = %d with piece 0 had and piece 1 at a peer, want 2", got)
	}
	p.PeerHave("b", 3)
	if got := p.Unavailable(); got != 1 {
		t.Fatalf("Unavailable = %d after a peer announced piece 3, want 1", got)
	}
	p.PeerHaveAll("c")
	if got := p.Unavailable(); got != 0 {
		t.Fatalf("Unavailable = %d with a seed at hand, want 0", got)
	}
	p.PeerGone("c")
	p.PeerGone("a")
	if got := p.Unavailable(); got != 2 {
		t.Fatalf("Unavailable = %d after the seed and a left, want 2", got)
	}
}

func TestPrioritizeComesFirst(t *testing.T) {
	// 20 pieces of 2 blocks; the peer has them all. Without priorities the
	// picker would start random or rarest pieces; with 17 and 5 urgent it
	// must hand out exactly their blocks first, 17 before 5.
	p := newPicker(3, 20, 32, 20*32, 16, 4)
	p.PeerHaveAll("a")
	p.Prioritize(17, 5)
	got := p.Pick("a", 4)
	want := []int{17, 17, 5, 5}
	if len(got) != len(want) {
		t.Fatalf("picked %d blocks, want %d", len(got), len(want))
	}
	for k, b := range got {
		if b.Piece != want[k] {
			t.Fatalf("block %d is of piece %d, want %d (got %v)", k, b.Piece, want[k], got)
		}
	}
	// A newer request goes ahead of older ones; had pieces drop out.
	p.Prioritize(9)
	if u := p.Urgent(); len(u) != 3 || u[0] != 9 || u[1] != 17 || u[2] != 5 {
		t.Fatalf("urgent = %v, want [9 17 5]", u)
	}
	for _, b := range got[:2] {
		p.Received("a", b)
	}
	p.Verified(17)
	if u := p.Urgent(); len(u) != 2 || u[0] != 9 || u[1] != 5 {
		t.Fatalf("after 17 verified urgent = %v, want [9 5]", u)
	}
	// A peer without the urgent piece still gets other work.
	p.PeerHave("b", 2)
	if got := p.Pick("b", 2); len(got) == 0 || got[0].Piece != 2 {
		t.Fatalf("peer b picked %v, want blocks of piece 2", got)
	}
	// Out of range and had pieces are ignored.
	p.Prioritize(-1, 20, 17)
	if u := p.Urgent(); len(u) != 2 {
		t.Fatalf("urgent = %v after bad input, want 2 entries", u)
	}
}

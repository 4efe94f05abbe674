package overlay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// fakePaths is a provider whose paths record their attempts and succeed
// only when named in ok.
type fakePaths struct {
	name      string
	first     []Path
	fallbacks []Path
	calls     *int // Paths calls
	gotTried  map[peer.ID]bool
}

func (f *fakePaths) Name() string { return f.name }
func (f *fakePaths) Paths(peer.ID, Class) []Path {
	if f.calls != nil {
		*f.calls++
	}
	return f.first
}
func (f *fakePaths) Fallbacks(_ peer.ID, _ Class, tried map[peer.ID]bool) []Path {
	f.gotTried = map[peer.ID]bool{}
	for k, v := range tried {
		f.gotTried[k] = v
	}
	var out []Path
	for _, p := range f.fallbacks {
		if !tried[p.Via] {
			out = append(out, p)
		}
	}
	return out
}

type attempts struct {
	order    []string
	deadline map[string]time.Duration
	ok       map[string]bool
}

func (a *attempts) path(kind string, via peer.ID, rank Rank, hedge bool) Path {
	p := Path{Kind: kind, Via: via, Rank: rank, Hedge: hedge}
	name := kind
	if via != "" {
		name += " via " + string(via)
	}
	p.Open = func(ctx context.Context, _ protocol.ID) (network.Stream, error) {
		a.order = append(a.order, name)
		if d, ok := ctx.Deadline(); ok {
			a.deadline[name] = time.Until(d)
		}
		if a.ok[name] {
			return fakeStream{name: name}, nil
		}
		return nil, errors.New(name + " refused")
	}
	return p
}

// fakeStream is a stream that only knows which path opened it.
type fakeStream struct {
	network.Stream
	name string
}

func newAttempts(ok ...string) *attempts {
	a := &attempts{deadline: map[string]time.Duration{}, ok: map[string]bool{}}
	for _, n := range ok {
		a.ok[n] = true
	}
	return a
}

const (
	peerB = peer.ID("b")
	peerC = peer.ID("c")
	peerD = peer.ID("d")
	peerX = peer.ID("x")
)

func TestPathsAreTriedInRankOrderThenFallbacksThenLast(t *testing.T) {
	for _, tc := range []struct {
		name      string
		directTop Rank
		ok        string
		want      []string
	}{
		{"preferred one-hop path first", RankNormal, "ron via b", []string{"ron via b"}},
		{"direct after a failed preferred path", RankNormal, "direct", []string{"ron via b", "direct"}},
		{"fallbacks skip the intermediate already tried", RankNormal, "ron via d",
			[]string{"ron via b", "direct", "relay via x", "ron via c", "ron via d"}},
		{"a direct path judged down goes last", RankLast, "direct",
			[]string{"ron via b", "relay via x", "ron via c", "ron via d", "direct"}},
		{"nothing opens", RankNormal, "",
			[]string{"ron via b", "direct", "relay via x", "ron via c", "ron via d"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttempts(tc.ok)
			direct := &fakePaths{name: "direct", first: []Path{a.path("direct", "", tc.directTop, true)}}
			ron := &fakePaths{name: "ron",
				first:     []Path{a.path("ron", peerB, RankPreferred, false)},
				fallbacks: []Path{a.path("ron", peerB, RankNormal, false), a.path("ron", peerC, RankNormal, false), a.path("ron", peerD, RankNormal, false)}}
			// A provider added later (as the NAT layer adds a relay circuit)
			// is asked in its turn, and OpenStream's callers do not change.
			relay := &fakePaths{name: "relay", first: []Path{a.path("relay", peerX, RankNormal, false)}}
			s, err := openOnPaths(context.Background(), []PathProvider{direct, ron, relay}, peerC, "/p", ClassDefault)
			if strings.Join(a.order, ", ") != strings.Join(tc.want, ", ") {
				t.Fatalf("tried %v, want %v", a.order, tc.want)
			}
			if tc.ok == "" {
				if err == nil {
					t.Fatal("no path opened, yet no error")
				}
				for _, w := range []string{"direct: direct refused", "ron via b refused", "ron via d refused", "/p stream to " + peerC.String()} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				return
			}
			if err != nil || s.(fakeStream).name != tc.ok {
				t.Fatalf("got %v, %v; want the stream of %s", s, err, tc.ok)
			}
		})
	}
}

func TestFallbacksAreAskedOnlyWhenFirstPathsFail(t *testing.T) {
	a := newAttempts("direct")
	calls := 0
	direct := &fakePaths{name: "direct", first: []Path{a.path("direct", "", RankNormal, false)}, calls: &calls}
	ron := &fakePaths{name: "ron", fallbacks: []Path{a.path("ron", peerB, RankNormal, false)}}
	if _, err := openOnPaths(context.Background(), []PathProvider{direct, ron}, peerC, "/p", ClassDefault); err != nil {
		t.Fatal(err)
	}
	if ron.gotTried != nil {
		t.Fatal("fallbacks were asked for though the direct path opened")
	}
	if calls != 1 {
		t.Fatalf("Paths called %d times for one open, want 1", calls)
	}
	a = newAttempts()
	ron.first = []Path{a.path("ron", peerB, RankPreferred, false)}
	direct.first = []Path{a.path("direct", "", RankNormal, false)}
	_, _ = openOnPaths(context.Background(), []PathProvider{direct, ron}, peerC, "/p", ClassDefault)
	if !ron.gotTried[peerB] {
		t.Fatalf("fallbacks were not told b was tried: %v", ron.gotTried)
	}
}

func TestHedgedPathLeavesTimeForTheRest(t *testing.T) {
	a := newAttempts("ron via b")
	failed := 0
	d := a.path("direct", "", RankNormal, true)
	d.Failed = func(error) { failed++ }
	direct := &fakePaths{name: "direct", first: []Path{d}}
	ron := &fakePaths{name: "ron", fallbacks: []Path{a.path("ron", peerB, RankNormal, false)}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := openOnPaths(ctx, []PathProvider{direct, ron}, peerC, "/p", ClassDefault); err != nil {
		t.Fatal(err)
	}
	if got := a.deadline["direct"]; got > 6*time.Second || got < time.Second {
		t.Fatalf("the hedged direct path had %v of 10 s, want about half", got)
	}
	if got := a.deadline["ron via b"]; got < 6*time.Second {
		t.Fatalf("the path after it had %v, want what was left", got)
	}
	if failed != 1 {
		t.Fatalf("Failed called %d times, want 1", failed)
	}
	// The only path left gets the whole time, hedged or not.
	a = newAttempts()
	direct.first = []Path{a.path("direct", "", RankLast, true)}
	ron.fallbacks = nil
	_, _ = openOnPaths(ctx, []PathProvider{direct, ron}, peerC, "/p", ClassDefault)
	if got := a.deadline["direct"]; got < 6*time.Second {
		t.Fatalf("the last path had %v, want what was left", got)
	}
}

func TestCancelledOpenTriesNothing(t *testing.T) {
	a := newAttempts("direct")
	direct := &fakePaths{name: "direct", first: []Path{a.path("direct", "", RankNormal, false)}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := openOnPaths(ctx, []PathProvider{direct}, peerC, "/p", ClassDefault)
	if len(a.order) != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("tried %v, err %v; want nothing tried and context.Canceled", a.order, err)
	}
}

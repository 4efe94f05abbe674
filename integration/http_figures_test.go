package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

var (
	httpFigures = flag.Bool("http.figures", false,
		"TestHTTPFigures at full size: -http.peers peers with 10 swarms, a 64 MiB file for the gateway")
	httpPeers = flag.Int("http.peers", 64, "the group's size in TestHTTPFigures with -http.figures")
)

func medianDur(xs []time.Duration) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// The HTTP face's figures, on real peers: the gateway's time to first
// byte and throughput for a complete local file, its first byte for a
// file not yet local, the /metrics scrape time and series count on a peer
// of a large group with 10 swarms, and the dashboard's first paint and
// update interval in headless Chromium. Figures are printed, not asserted
// (the machine is shared); what is asserted is that every answer is right.
// By default it runs small (8 peers, 2 swarms, 16 MiB), as CI does;
// -http.figures runs the sizes of issue 17.
func TestHTTPFigures(t *testing.T) {
	peers, swarms, size := 8, 2, int64(16<<20)
	if *httpFigures {
		peers, swarms, size = *httpPeers, 10, 64<<20
	}
	c := NewCluster(t, peers)
	obs := c.Peers[len(c.Peers)-1]
	if *httpFigures {
		// 64 daemons keep 2 cores busy: wait for the two peers measured
		// to see everyone, not for every peer to.
		Eventually(t, 10*time.Minute, time.Second, seesAll([]*Peer{c.Peers[0], obs}, peers))
	} else {
		Eventually(t, 3*convergeTimeout, pollInterval, c.Expect(nil))
	}
	ctx := context.Background()
	dir := t.TempDir()
	seed := c.Peers[0]
	sc, err := seed.api()
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	var files []string
	for i := range swarms {
		n := int64(1 << 20)
		if i == 0 {
			n = size
		}
		p := filepath.Join(dir, fmt.Sprintf("f%d.bin", i))
		if _, err := swarm.WriteSample(p, n, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
		sh, err := sc.Share(ctx, node.ShareRequest{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		hashes, files = append(hashes, sh.InfoHash), append(files, p)
	}
	big, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	seedURL := httpURL(t, seed)

	// Gateway, complete local file: time to first byte (a 1-byte range)
	// and the throughput of whole-file reads.
	url := seedURL + "swarm/" + hashes[0] + "/f0.bin"
	var ttfb []time.Duration
	for range 21 {
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Range", "bytes=0-0")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var one [1]byte
		if _, err := io.ReadFull(resp.Body, one[:]); err != nil || one[0] != big[0] {
			t.Fatalf("first byte: %v", err)
		}
		ttfb = append(ttfb, time.Since(start))
		resp.Body.Close()
	}
	var rates []float64
	for range 5 {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Fatalf("whole file: %d of %d bytes, %v", n, size, err)
		}
		rates = append(rates, float64(n)/time.Since(start).Seconds())
	}
	slices.Sort(rates)
	t.Logf("FIGURE gateway, complete local file: TTFB median %v over %d requests (goal <= 5ms); throughput median %.0f MB/s over %d reads of %d MiB (goal >= 400 MB/s)",
		medianDur(ttfb), len(ttfb), rates[len(rates)/2]/1e6, len(rates), size>>20)

	// Gateway, file not yet local: first byte on peers that have none of
	// it; each asks for a range in the middle, so the pieces it needs come
	// first, then checks the bytes.
	var cold []time.Duration
	for _, p := range c.Peers[1:min(len(c.Peers), 6)] {
		from := size/2 + int64(len(cold))*4096
		start := time.Now()
		req, _ := http.NewRequest(http.MethodGet, httpURL(t, p)+"swarm/"+hashes[0]+"/f0.bin", nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, from+4095))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var first [1]byte
		if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		cold = append(cold, time.Since(start))
		rest, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(append(first[:], rest...), big[from:from+4096]) {
			t.Fatalf("%s: cold range: status %d, %v", p.Name, resp.StatusCode, err)
		}
	}
	t.Logf("FIGURE gateway, file not yet local (%d peers in the group): first byte median %v, max %v over %d peers (goal <= 1s)",
		peers, medianDur(cold), slices.Max(cold), len(cold))

	// Every swarm active on one peer: it fetches each, so the scrape
	// carries its per-swarm series.
	oc, err := obs.api()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hashes {
		if _, err := oc.StartGet(ctx, node.GetRequest{Ref: h, Out: filepath.Join(obs.Home, "dl")}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range hashes {
		swarmDone(t, obs, h, 2*time.Minute)
	}
	murl := httpURL(t, obs) + "metrics"
	var scrapes []time.Duration
	series := 0
	for range 21 {
		start := time.Now()
		resp, err := http.Get(murl)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scrape: status %d, %v", resp.StatusCode, err)
		}
		scrapes = append(scrapes, time.Since(start))
		series = 0
		for _, l := range strings.Split(string(body), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				series++
			}
		}
		if !strings.Contains(string(body), `peer_members{state="alive"} `) {
			t.Fatal("the scrape has no count of alive members")
		}
	}
	t.Logf("FIGURE /metrics on a peer of %d members with %d swarms: scrape median %v, max %v; %d series (goals <= 20ms, <= 2,000 series)",
		peers, swarms, medianDur(scrapes), slices.Max(scrapes), series)

	// The dashboard in Chromium, drawing the whole group (at full size 64
	// peers, twice the 32 of the goal).
	chrome := findChromium()
	if chrome == "" {
		t.Skip("SKIPPED the dashboard figures: no Chromium found (install Debian's chromium, or set PEER_CHROMIUM)")
	}
	actx, cancelA := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU)...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	bctx, cancelT := context.WithTimeout(bctx, 2*time.Minute)
	defer cancelT()
	if _, err := chromedp.Run(bctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	// Twice: the first load of a fresh browser, then a second load as a
	// browser already running would do it.
	var paints, pagePaints []time.Duration
	var stamps []float64
	for round := range 2 {
		p, pp, st := dashboardLoad(t, bctx, httpURL(t, obs), peers, round == 1)
		paints, pagePaints = append(paints, p), append(pagePaints, pp)
		stamps = st
	}
	var gaps []time.Duration
	for i := 1; i < len(stamps); i++ {
		gaps = append(gaps, time.Duration((stamps[i]-stamps[i-1])*float64(time.Millisecond)))
	}
	t.Logf("FIGURE dashboard with %d peers: first paint %v after navigation started as the page measures it, %v in a fresh browser (goal <= 1s; %v and %v as the test saw them, with the browser's round trips); updates every %v median, %v max (goal <= 2s)",
		peers, pagePaints[1].Round(time.Millisecond), pagePaints[0].Round(time.Millisecond),
		paints[1].Round(time.Millisecond), paints[0].Round(time.Millisecond), medianDur(gaps).Round(time.Millisecond), slices.Max(gaps).Round(time.Millisecond))
}

// dashboardLoad opens the dashboard at url and waits for its first paint
// (which must show want peers on the ring), then, when watch is set, for
// six updates. It returns the first paint as the test saw it and as the
// page measured it from the start of navigation, and the page's clock at
// each update.
func dashboardLoad(t *testing.T, bctx context.Context, url string, want int, watch bool) (paint, pagePaint time.Duration, stamps []float64) {
	t.Helper()
	start := time.Now()
	if _, err := chromedp.Run(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[[]byte](`({u: +document.getElementById("updated").dataset.updates,
			k: document.querySelectorAll("#ring .peer").length, t: performance.now(),
			fp: +(document.getElementById("updated").dataset.firstPaintMs || 0)})`))
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			U  int     `json:"u"`
			K  int     `json:"k"`
			T  float64 `json:"t"`
			FP float64 `json:"fp"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		if v.U >= 1 && paint == 0 {
			if v.K != want {
				t.Fatalf("the first paint shows %d peers, want %d", v.K, want)
			}
			paint = time.Since(start)
			pagePaint = time.Duration(v.FP * float64(time.Millisecond))
		}
		if v.U > len(stamps) {
			stamps = append(stamps, v.T)
		}
		if paint > 0 && (!watch || len(stamps) >= 6) {
			return paint, pagePaint, stamps
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard updated %d times in 60 s", len(stamps))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seesAll is met once each of ps counts n alive members.
func seesAll(ps []*Peer, n int) func() error {
	return func() error {
		for _, p := range ps {
			ms, err := p.Members()
			if err != nil {
				return err
			}
			alive := 0
			for _, m := range ms.Members {
				if m.State == "alive" {
					alive++
				}
			}
			if alive != n {
				return fmt.Errorf("%s sees %d of %d alive", p.Name, alive, n)
			}
		}
		return nil
	}
}

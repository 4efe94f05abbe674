package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// findChromium finds a headless-capable Chromium or Chrome.
func findChromium() string {
	if p := os.Getenv("PEER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// screenshotPath is where the dashboard test leaves its screenshot for a
// person to look at: $PEER_ARTIFACTS, or a folder in the system's temp.
func screenshotPath(name string) string {
	dir := os.Getenv("PEER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "peer-artifacts")
	}
	_ = os.MkdirAll(dir, 0o755)
	return filepath.Join(dir, name)
}

// httpURL is a peer's HTTP face, from its status.
func httpURL(t *testing.T, p *Peer) string {
	t.Helper()
	cl, err := p.api()
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.HTTP == "" {
		t.Fatalf("%s: no HTTP face in its status", p.Name)
	}
	return st.HTTP
}

// The dashboard, opened in headless Chromium on a devnet of 8 peers: the
// ring shows 8 peers, the matrix is 8×8 with measured links, a swarm's
// progress advances while a file is fetched, and a Range request made by
// the page through the gateway returns the right bytes.
func TestDashboardInBrowser(t *testing.T) {
	chrome := findChromium()
	if chrome == "" {
		t.Skip("SKIPPED: no Chromium found (install Debian's chromium, or set PEER_CHROMIUM); the dashboard is not checked in a browser")
	}
	c := NewCluster(t, 8)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	src := filepath.Join(t.TempDir(), "data.bin")
	const size = 12 << 20
	if _, err := swarm.WriteSample(src, size, 7); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(src)
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
	watched := c.Peers[1]
	base := httpURL(t, watched)

	actx, cancelA := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1100))...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	bctx, cancelT := context.WithTimeout(bctx, 3*time.Minute)
	defer cancelT()
	if _, err := chromedp.Run(bctx, chromedp.Navigate(base)); err != nil {
		t.Fatalf("open %s in %s: %v", base, chrome, err)
	}
	eval := func(js string, out any, opts ...chromedp.EvaluateOption) error {
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[[]byte](js, opts...))
		if err != nil {
			return err
		}
		return json.Unmarshal(raw, out)
	}
	browserWait := func(what string, cond func() error) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			err := cond()
			if err == nil {
				return
			}
			if time.Now().After(deadline) || bctx.Err() != nil {
				var errText string
				_ = eval(`document.getElementById("error").textContent`, &errText)
				t.Fatalf("%s: %v (page error: %q)", what, err, errText)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}

	browserWait("the ring shows 8 peers", func() error {
		var k int
		if err := eval(`document.querySelectorAll("#ring .peer").length`, &k); err != nil {
			return err
		}
		if k != 8 {
			return fmt.Errorf("%d peers on the ring", k)
		}
		return nil
	})
	browserWait("the matrix is 8×8 with every link measured", func() error {
		var shape struct {
			Rows     int   `json:"rows"`
			Cells    []int `json:"cells"`
			Measured int   `json:"measured"`
		}
		js := `(() => { const rows = [...document.querySelectorAll("#matrix tr.row")];
			return { rows: rows.length, cells: rows.map(r => r.querySelectorAll("td").length),
			measured: [...document.querySelectorAll("#matrix td.cell:not(.self)")].filter(td => /^[0-9.]+$/.test(td.textContent)).length }; })()`
		if err := eval(js, &shape); err != nil {
			return err
		}
		if shape.Rows != 8 {
			return fmt.Errorf("%d rows", shape.Rows)
		}
		for i, k := range shape.Cells {
			if k != 8 {
				return fmt.Errorf("row %d has %d cells", i, k)
			}
		}
		if shape.Measured != 8*7 {
			return fmt.Errorf("%d of %d links show an RTT", shape.Measured, 8*7)
		}
		return nil
	})

	// A fetch slow enough to watch: progress must advance on the page.
	wcl, err := watched.api()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wcl.StartGet(ctx, node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(watched.Home, "downloads"),
		DownloadRate: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	haveOnPage := func() (have, pieces, updates int, err error) {
		var v struct {
			Have    int `json:"have"`
			Pieces  int `json:"pieces"`
			Updates int `json:"updates"`
		}
		js := fmt.Sprintf(`(() => { const s = document.querySelector('.swarm[data-infohash="%s"]');
			return { have: s ? +s.dataset.have : -1, pieces: s ? +s.dataset.pieces : -1,
			updates: +document.getElementById("updated").dataset.updates }; })()`, sh.InfoHash)
		err = eval(js, &v)
		return v.Have, v.Pieces, v.Updates, err
	}
	var first, firstUpdates int
	browserWait("the swarm appears with some progress", func() error {
		h, p, u, err := haveOnPage()
		if err != nil {
			return err
		}
		if h <= 0 || p <= 0 {
			return fmt.Errorf("have %d of %d", h, p)
		}
		if h == p {
			return permanentError{fmt.Errorf("the fetch finished before its progress could be watched")}
		}
		first, firstUpdates = h, u
		return nil
	})
	browserWait("the progress advances without a reload", func() error {
		h, p, u, err := haveOnPage()
		if err != nil {
			return err
		}
		if h <= first || u <= firstUpdates {
			return fmt.Errorf("have %d of %d (was %d), %d updates (was %d)", h, p, first, u, firstUpdates)
		}
		return nil
	})
	shot := screenshotPath("dashboard.png")
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG, below that a JPEG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot (%d bytes): %s", len(png), shot)

	// A Range request from the page (same origin: the dashboard's CSP
	// allows no other), through the gateway of the peer still fetching:
	// the pieces it needs jump the queue.
	other := httpURL(t, c.Peers[2])
	const from, n = 5<<20 + 123, 1000
	var got struct {
		Status int    `json:"status"`
		Range  string `json:"range"`
		Body   string `json:"body"`
	}
	js := fmt.Sprintf(`fetch(%q, { headers: { Range: "bytes=%d-%d" } }).then(async r => {
		const b = new Uint8Array(await r.arrayBuffer()); let s = "";
		for (const x of b) s += String.fromCharCode(x);
		return { status: r.status, range: r.headers.get("Content-Range") || "", body: btoa(s) }; })`,
		"/swarm/"+sh.InfoHash+"/data.bin", from, from+n-1)
	if err := eval(js, &got, chromedp.EvalAwaitPromise); err != nil {
		t.Fatalf("range fetch in the browser: %v", err)
	}
	body, err := base64.StdEncoding.DecodeString(got.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != http.StatusPartialContent || got.Range != fmt.Sprintf("bytes %d-%d/%d", from, from+n-1, size) {
		t.Fatalf("range answer: status %d, Content-Range %q", got.Status, got.Range)
	}
	if !bytes.Equal(body, want[from:from+n]) {
		t.Fatalf("the range's %d bytes differ from the file's", len(body))
	}
	// And with Go's client, a range at the other end of the file, from a
	// peer that has none of it yet.
	req, _ := http.NewRequest(http.MethodGet, other+"swarm/"+sh.InfoHash+"/data.bin", nil)
	req.Header.Set("Range", "bytes=-4096")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(tail, want[size-4096:]) {
		t.Fatalf("suffix range: status %d, %d bytes, err %v", resp.StatusCode, len(tail), err)
	}
}

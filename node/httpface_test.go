package node

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/swarm"
)

func faceURL(t *testing.T, n *Node) string {
	t.Helper()
	u := n.face.Load().URL()
	if u == "" {
		t.Fatal("no HTTP face")
	}
	return u
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func TestGatewayServesSharedFiles(t *testing.T) {
	dir := t.TempDir()
	n := startTestNode(t, filepath.Join(dir, "a"))
	base := faceURL(t, n)
	// A directory swarm of two files.
	root := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := swarm.WriteSample(filepath.Join(root, "sub", "b.bin"), 300_000, 2); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello, gateway\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := n.swarms.Share(root, swarm.ShareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Hash().String()
	want, _ := os.ReadFile(filepath.Join(root, "sub", "b.bin"))

	resp, body := get(t, base+"swarm/"+h+"/tree/sub/b.bin")
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Fatalf("whole file: status %d, %d bytes (want %d)", resp.StatusCode, len(body), len(want))
	}
	etag := resp.Header.Get("ETag")
	if !strings.Contains(etag, h) || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("headers: %v", resp.Header)
	}
	resp, _ = get(t, base+"swarm/"+h+"/tree/sub/b.bin", "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match with the ETag: status %d, want 304", resp.StatusCode)
	}
	resp, body = get(t, base+"swarm/"+h+"/tree/sub/b.bin", "Range", "bytes=1000-1999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[1000:2000]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", len(want)) {
		t.Fatalf("range: status %d, Content-Range %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
	}
	resp, _ = get(t, base+"swarm/"+h+"/tree/sub/b.bin", "Range", "bytes=900000-")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: status %d, want 416", resp.StatusCode)
	}
	resp, body = get(t, base+"swarm/"+h+"/tree/a.txt")
	if resp.StatusCode != 200 || string(body) != "hello, gateway\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("a.txt: status %d, type %q, body %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// Listings: the root, and a directory.
	resp, body = get(t, base+"swarm/"+h+"/tree/")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `href="a.txt"`) || !strings.Contains(string(body), `href="sub/"`) {
		t.Fatalf("listing: status %d: %s", resp.StatusCode, body)
	}
	resp, _ = get(t, base+"swarm/"+h)
	if resp.StatusCode != 200 {
		t.Fatalf("root listing: status %d", resp.StatusCode)
	}
	// Refused: traversal, bad hashes, missing files, unknown swarms.
	for _, p := range []string{"/tree/..%2f..%2fetc%2fpasswd", "/tree/sub/..%2fa.txt", "/tree/%2e%2e/x", "/tree/a.txt%00"} {
		resp, _ := get(t, base+"swarm/"+h+p)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, base+"swarm/xyz/a"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad infohash: status %d, want 400", resp.StatusCode)
	}
	if resp, _ := get(t, base+"swarm/"+h+"/tree/nope.txt"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing file: status %d, want 404", resp.StatusCode)
	}
	unknown := strings.Repeat("ab", 20)
	if resp, _ := get(t, base+"swarm/"+unknown+"/x?wait=300ms"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown infohash: status %d, want 404", resp.StatusCode)
	}
	if n.swarms.Swarm(mustHash(unknown)) != nil {
		t.Error("a swarm that was never found stays behind")
	}
	if resp, _ := get(t, base+"swarm/"+h+"/tree/a.txt?wait=forever"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad wait: status %d, want 400", resp.StatusCode)
	}
	// HEAD gives the length and no body.
	hr, err := http.Head(base + "swarm/" + h + "/tree/sub/b.bin")
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != 200 || hr.ContentLength != int64(len(want)) {
		t.Fatalf("HEAD: status %d, length %d", hr.StatusCode, hr.ContentLength)
	}
}

// A file not yet local is streamed as it arrives: the bytes are right,
// and the swarm is left fetching into the gateway directory.
func TestGatewayFetchesFromTheSwarm(t *testing.T) {
	dir := t.TempDir()
	a := startTestNode(t, filepath.Join(dir, "a"))
	b := startTestNode(t, filepath.Join(dir, "b"), a.Addrs()[0])
	src := filepath.Join(dir, "data.bin")
	if _, err := swarm.WriteSample(src, 3<<20, 9); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(src)
	s, err := a.swarms.Share(src, swarm.ShareOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 30*time.Second, func() error {
		if b.members.NumAlive() < 2 || !b.dht.Ring().Joined {
			return fmt.Errorf("b has %d members, joined the ring: %v", b.members.NumAlive(), b.dht.Ring().Joined)
		}
		return nil
	})
	url := faceURL(t, b) + "swarm/" + s.Hash().String() + "/data.bin"
	resp, body := get(t, url, "Range", "bytes=2000000-2000999")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[2000000:2001000]) {
		t.Fatalf("range of a remote file: status %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = get(t, url)
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Fatalf("remote file: status %d, %d of %d bytes", resp.StatusCode, len(body), len(want))
	}
	if got := b.swarms.Swarm(s.Hash()); got == nil || !strings.HasPrefix(got.Path(), filepath.Join(b.home, gatewayDir)) {
		t.Fatalf("the fetched swarm is not in the gateway directory")
	}
}

func TestMetricsScrape(t *testing.T) {
	dir := t.TempDir()
	n := startTestNode(t, filepath.Join(dir, "a"))
	src := filepath.Join(dir, "x.bin")
	if _, err := swarm.WriteSample(src, 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := n.swarms.Share(src, swarm.ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, faceURL(t, n)+"metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("not Prometheus text: %v", err)
	}
	for _, name := range []string{"peer_members", "peer_ring_joined", "peer_ring_lookup_seconds", "peer_swarms",
		"peer_nat_role", "peer_ron_forwarded_bytes_total", "peer_messages_total", "peer_tunnel_bytes_total", "peer_libp2p_rcmgr_system"} {
		if _, ok := fams[name]; !ok && name != "peer_ring_lookup_seconds" {
			t.Errorf("no %s", name)
		}
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "peer_") && !strings.HasPrefix(name, "go_") {
			t.Errorf("metric %s lacks the peer_ prefix", name)
		}
		if f.GetType().String() == "COUNTER" && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
	alive := fams["peer_members"]
	found := false
	for _, m := range alive.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetValue() == "alive" && m.GetGauge().GetValue() == 1 {
				found = true
			}
		}
	}
	if !found {
		t.Error("peer_members{state=alive} is not 1 on a peer alone")
	}
}

func TestFaceBeyondLoopbackNeedsToken(t *testing.T) {
	// Bind a wildcard address, then talk to it over loopback: the face
	// must ask for the token since it listens beyond loopback.
	home := filepath.Join(t.TempDir(), "a")
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("SKIPPED: cannot listen on 0.0.0.0 here: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.HTTP = fmt.Sprintf("0.0.0.0:%d", port)
	n, err := Start(home, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(0) })
	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for _, p := range []string{"", "api/dashboard", "swarm/" + strings.Repeat("ab", 20) + "/x"} {
		if resp, _ := get(t, base+p); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("/%s without the token: status %d, want 401", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, base+"api/dashboard", "Authorization", "Bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: status %d, want 401", resp.StatusCode)
	}
	if resp, _ := get(t, base+"metrics"); resp.StatusCode != 200 {
		t.Errorf("/metrics: status %d, want 200 without a token", resp.StatusCode)
	}
	cl, err := NewClient(home)
	if err != nil {
		t.Fatal(err)
	}
	u, err := cl.DashboardURL(context.Background())
	if err != nil || !strings.Contains(u, "?token=") {
		t.Fatalf("dashboard URL %q (%v): want one with the token", u, err)
	}
	tok := u[strings.Index(u, "?token=")+len("?token="):]
	if resp, _ := get(t, base+"api/dashboard", "Authorization", "Bearer "+tok); resp.StatusCode != 200 {
		t.Errorf("with the token: status %d", resp.StatusCode)
	}
	resp, _ := get(t, base+"?token="+tok)
	if resp.StatusCode != 200 {
		t.Fatalf("?token=: status %d", resp.StatusCode)
	}
}

func TestHTTPAddrChecked(t *testing.T) {
	for _, ok := range []string{"off", "127.0.0.1:0", "0.0.0.0:8080", "[::1]:9000", "localhost:1234"} {
		if err := checkHTTPAddr(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "8080", "example.com:80", "127.0.0.1:http-x", "1.2.3.4:99999"} {
		if err := checkHTTPAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzGatewayPath(f *testing.F) {
	for _, s := range []string{"", "a", "a/b/", "../x", "a/./b", "a//b", "a\\b", "a\x00", "dir/sub/file.bin"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		parts, err := cleanGatewayPath(p)
		if err != nil {
			return
		}
		for i, s := range parts {
			if s == "" && i == len(parts)-1 && strings.HasSuffix(p, "/") {
				continue // a directory's trailing slash
			}
			if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
				t.Fatalf("%q gave part %q", p, s)
			}
		}
	})
}

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/node"
)

// A web server exposed as "web" on two peers is reached by name from a
// third through `peer forward`; when one provider is killed, new
// connections go through the other within 2 s; the forward comes back
// after its peer restarts; `peer services` counts what went through.
func TestTunnelByNameAcrossAKilledProvider(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 4)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the backend, %s", r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	a, b, user := c.Peers[1], c.Peers[2], c.Peers[3]
	for _, p := range []*Peer{a, b} {
		if code, _, errOut := runPeer(t, "expose", "web", ln.Addr().String(), "--home", p.Home); code != 0 {
			t.Fatalf("%s: expose: exit %d: %s", p.Name, code, errOut)
		}
	}
	code, out, errOut := runPeer(t, "forward", "web", "--listen", "127.0.0.1:0", "--home", user.Home, "--json")
	if code != 0 {
		t.Fatalf("forward: exit %d: %s", code, errOut)
	}
	var fw node.ServiceDone
	if err := json.Unmarshal([]byte(out), &fw); err != nil || fw.Listen == "" {
		t.Fatalf("forward answered %s (%v)", out, err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) error {
		resp, err := client.Get("http://" + fw.Listen + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if want := "hello from the backend, " + path; string(body) != want {
			return fmt.Errorf("GET %s: %q, want %q", path, body, want)
		}
		return nil
	}
	// The providers' records reach the ring in the background.
	Eventually(t, 15*time.Second, pollInterval, func() error { return get("/first") })
	for i := range 10 {
		if err := get(fmt.Sprintf("/%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	a.Kill9()
	killed := time.Now()
	var firstOK time.Duration
	Eventually(t, 10*time.Second, 50*time.Millisecond, func() error {
		if err := get("/after-kill"); err != nil {
			return err
		}
		firstOK = time.Since(killed)
		return nil
	})
	t.Logf("FIGURE tunnel_provider_killed_to_new_connection_s: %.2f", firstOK.Seconds())
	for i := range 10 {
		if err := get(fmt.Sprintf("/survivor-%d", i)); err != nil {
			t.Fatalf("after the kill: %v", err)
		}
	}
	if firstOK > 2*time.Second {
		t.Errorf("a new connection after the provider's kill took %v (goal 2 s)", firstOK)
	}

	user.Stop()
	user.Restart()
	Eventually(t, convergeTimeout, pollInterval, func() error { return get("/after-restart") })
	code, out, errOut = runPeer(t, "services", "--home", user.Home, "--json")
	if code != 0 {
		t.Fatalf("services: exit %d: %s", code, errOut)
	}
	var svc node.ServicesInfo
	if err := json.Unmarshal([]byte(out), &svc); err != nil || len(svc.Forward) != 1 || svc.Forward[0].Conns < 1 || svc.Forward[0].BytesIn == 0 {
		t.Fatalf("services after the restart: %s (%v)", out, err)
	}
	code, out, _ = runPeer(t, "services", "--home", b.Home)
	if code != 0 || !strings.Contains(out, "expose   web") {
		t.Fatalf("the surviving provider's services: %q", out)
	}
}

package node

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// apiRoutes are the control API requests whose bytes come from the
// client: JSON bodies, and a key or infohash in the URL.
var apiRoutes = []struct {
	method, path string
	body         func() any // the request type a body decodes into, if any
	limit        int64      // how much of the body the handler reads
}{
	{"POST", "/v1/lookup", func() any { return new(LookupRequest) }, maxAPIBody},
	{"POST", "/v1/kv", func() any { return new(PutRequest) }, maxAPIBody},
	{"POST", "/v1/share", func() any { return new(ShareRequest) }, maxAPIBody},
	{"POST", "/v1/get", func() any { return new(GetRequest) }, maxTorrentBody},
	{"POST", "/v1/mail/send", func() any { return new(SendRequest) }, maxAPIBody},
	{"GET", "/v1/kv?key=", nil, 0},
	{"GET", "/v1/mail/inbox?after=", nil, 0},
	{"GET", "/v1/swarms/", nil, 0},
	{"DELETE", "/v1/swarms/", nil, 0},
}

// FuzzControlAPI drives the control API's real handler, on a node of its
// own listening on 127.0.0.1, with arbitrary request bytes. No request may
// panic the handler; every answer is JSON; a body that does not decode
// into the route's request type is answered 400; a request with the wrong
// token is answered 401 before anything is read.
//
// Only the paths in bodies that decode are rewritten (a share's path, a
// get's output directory), so that the fuzzer cannot make the node hash or
// write files anywhere on the machine.
func FuzzControlAPI(f *testing.F) {
	dir := f.TempDir()
	home := filepath.Join(dir, "home")
	if _, err := InitHome(home); err != nil {
		f.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	n, err := Start(home, cfg, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close(0) })
	const token = "fuzz-token"
	mux := http.NewServeMux()
	registerDHT(mux, n)
	registerNames(mux, n)
	registerMail(mux, n)
	registerSwarm(mux, n)
	registerRON(mux, n)
	handler := requireToken(token, mux)

	src := filepath.Join(dir, "src", "shared.bin")
	if _, err := swarm.WriteSample(src, 40<<10, 1); err != nil {
		f.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	info, err := meta.Build(src, 16<<10, nil)
	if err != nil {
		f.Fatal(err)
	}
	tb, err := meta.MarshalTorrent(info, 1)
	if err != nil {
		f.Fatal(err)
	}
	seed := func(route uint8, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(route, b, true)
	}
	seed(0, LookupRequest{Key: "k"})
	seed(0, LookupRequest{ChordID: strings.Repeat("ab", 20)})
	seed(1, PutRequest{Key: "k", Value: "v", TTL: "1h"})
	seed(1, PutRequest{Key: "", Value: "v", TTL: "-1s"})
	seed(2, ShareRequest{Path: "x", PieceLength: 16 << 10, UploadRate: 1 << 20})
	seed(3, GetRequest{Ref: info.Hash().String(), Out: "x"})
	seed(3, GetRequest{Ref: meta.Magnet(info.Hash(), "n"), Out: "x", DownloadRate: 1 << 10})
	seed(3, GetRequest{Torrent: tb, Out: "x"})
	f.Add(uint8(4), []byte("k"), true)
	f.Add(uint8(5), []byte(info.Hash().String()), true)
	f.Add(uint8(6), []byte(info.Hash().String()), true)
	f.Add(uint8(0), []byte(`{"key":1}`), true)
	f.Add(uint8(1), []byte(`{"key":"k","extra":0}`), true)
	f.Add(uint8(3), []byte(`{"torrent":"!!"}`), true)
	f.Add(uint8(2), []byte(`{}`), false)

	f.Fuzz(func(t *testing.T, route uint8, body []byte, auth bool) {
		rt := apiRoutes[int(route)%len(apiRoutes)]
		target := rt.path
		var decodes bool
		switch {
		case rt.body != nil:
			req := rt.body()
			dec := json.NewDecoder(io.LimitReader(bytes.NewReader(body), rt.limit))
			dec.DisallowUnknownFields()
			decodes = dec.Decode(req) == nil
			if decodes {
				switch r := req.(type) {
				case *ShareRequest:
					if r.Path != "" {
						r.Path = src
					}
				case *GetRequest:
					if r.Out != "" {
						r.Out = out
					}
				}
				// Sent as the client sends it; for the two routes above,
				// with the paths rewritten.
				b, err := json.Marshal(req)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := req.(*ShareRequest); ok {
					body = b
				} else if _, ok := req.(*GetRequest); ok {
					body = b
				}
			}
		case strings.HasSuffix(target, "="):
			target += url.QueryEscape(string(body))
		default:
			target += url.PathEscape(string(body))
		}
		r, err := http.NewRequest(rt.method, target, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if auth {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		defer cleanSwarms(t, n, out)

		code := w.Code
		switch {
		case !auth:
			if code != http.StatusUnauthorized {
				t.Fatalf("%s %s without the token: %d", rt.method, rt.path, code)
			}
		case rt.body != nil && !decodes:
			if code != http.StatusBadRequest {
				t.Fatalf("%s %s with a body that does not decode (%q): %d %s", rt.method, rt.path, body, code, w.Body)
			}
		case code == http.StatusInternalServerError && rt.path != "/v1/share":
			t.Fatalf("%s %s %q: 500 %s", rt.method, rt.path, body, w.Body)
		}
		ct := w.Header().Get("Content-Type")
		if !strings.HasPrefix(ct, "application/json") && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed ||
			code == http.StatusMovedPermanently || code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect) {
			// The ServeMux's own answer for a URL no route matches (an
			// empty hash, a path with "..", say): none of our handlers ran.
			return
		}
		if ct != "application/json" {
			t.Fatalf("%s %s: Content-Type %q", rt.method, rt.path, ct)
		}
		var v any
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v: %q", rt.method, rt.path, err, w.Body)
		}
		if code != http.StatusOK {
			if m, ok := v.(map[string]any); !ok || m["error"] == "" || m["error"] == nil {
				t.Fatalf("%s %s: %d without an error message: %s", rt.method, rt.path, code, w.Body)
			}
		}
	})
}

// cleanSwarms removes what a request started, so that every input meets
// the same node.
func cleanSwarms(t *testing.T, n *Node, out string) {
	for _, st := range n.swarms.Swarms() {
		h, err := meta.ParseInfoHash(st.InfoHash)
		if err != nil {
			t.Fatal(err)
		}
		_ = n.swarms.Remove(h)
	}
	_ = os.RemoveAll(out)
}

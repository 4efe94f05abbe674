package node

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The HTTP face: Prometheus metrics, the swarm gateway and the dashboard,
// on one listener (config `http`, flag --http; loopback by default). Bound
// beyond loopback, everything but /metrics asks for the control token: an
// Authorization: Bearer header, the peer_token cookie, or ?token= (which
// sets the cookie, so that a browser opened on the URL `peer dashboard`
// prints keeps working).

//go:embed web
var webFiles embed.FS

// checkHTTPAddr validates the `http` setting.
func checkHTTPAddr(s string) error {
	if s == "off" {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("config: http %q: want HOST:PORT (such as 127.0.0.1:8080) or \"off\"", s)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("config: http %q: the host must be an IP address or localhost", s)
		}
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("config: http %q: bad port: %v", s, err)
	}
	return nil
}

// loopbackOnly says whether a listener bound to addr takes connections
// from this machine only.
func loopbackOnly(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

type httpFace struct {
	srv     *http.Server
	ln      net.Listener
	metrics *nodeMetrics
	cancel  context.CancelFunc
	done    chan struct{}
}

// URL is where the face answers, "" when it is off.
func (f *httpFace) URL() string {
	if f == nil {
		return ""
	}
	return "http://" + f.ln.Addr().String() + "/"
}

// Open says whether the face answers without the token.
func (f *httpFace) Open() bool { return f != nil && loopbackOnly(f.ln.Addr()) }

func startHTTPFace(n *Node, addr, token string, log *slog.Logger) (*httpFace, error) {
	if addr == "off" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http %s: %w (pick another port with --http HOST:PORT, or --http off)", addr, err)
	}
	f := &httpFace{ln: ln, metrics: newMetrics(n), done: make(chan struct{})}
	web, _ := fs.Sub(webFiles, "web")
	guarded := http.NewServeMux()
	registerGateway(guarded, n)
	guarded.HandleFunc("GET /api/dashboard", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, n.dashboard())
	})
	guarded.Handle("GET /", http.FileServerFS(web))
	var inner http.Handler = guarded
	if !loopbackOnly(ln.Addr()) {
		inner = faceToken(token, guarded)
		log.Warn("the HTTP face listens beyond loopback: the dashboard and gateway need the control token (see `peer dashboard`); /metrics is open",
			"addr", ln.Addr().String())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(f.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), Timeout: 10 * time.Second,
	}))
	mux.Handle("/", inner)
	f.srv = &http.Server{
		Handler:           securityHeaders(mux),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.done)
		f.metrics.loop(ctx, n)
	}()
	go func() {
		if err := f.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP face stopped", "err", err)
		}
	}()
	log.Info("HTTP face listening", "url", f.URL())
	return f, nil
}

func (f *httpFace) close() {
	if f == nil {
		return
	}
	f.cancel()
	_ = f.srv.Close() // ends open gateway streams too
	<-f.done
}

// securityHeaders keeps the dashboard from being framed or its answers
// from being read as another type.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !strings.HasPrefix(r.URL.Path, "/swarm/") {
			h.Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
		}
		next.ServeHTTP(w, r)
	})
}

const tokenCookie = "peer_token"

func faceToken(token string, next http.Handler) http.Handler {
	ok := func(got string) bool { return subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1 }
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" && ok(strings.TrimPrefix(a, "Bearer ")) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); q != "" && ok(q) {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: token, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode})
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="peer"`)
		http.Error(w, "missing or wrong control token: open the URL `peer dashboard` prints, or send Authorization: Bearer TOKEN", http.StatusUnauthorized)
	})
}

package node

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// The gateway: GET /swarm/INFOHASH/PATH streams a file of a swarm over
// plain HTTP. PATH is the file's path as the manifest names it, the
// swarm's name first (a single file is just its name). A swarm this peer
// does not have is fetched, into the home's gateway directory, with the
// pieces each request needs asked for first, so bytes flow before the
// file is complete.

// gatewayDir is where the gateway puts what it fetches.
const gatewayDir = "gateway"

// gatewayWait is how long a request waits for the manifest of a swarm
// this peer does not have before it answers 404; ?wait= changes it.
const gatewayWait = 20 * time.Second

// gatewayAhead is how many pieces past a read are asked for early.
const gatewayAhead = 8

func registerGateway(mux *http.ServeMux, n *Node) {
	g := &gateway{n: n}
	mux.HandleFunc("GET /swarm/{hash}", g.serve)
	mux.HandleFunc("HEAD /swarm/{hash}", g.serve)
	mux.HandleFunc("GET /swarm/{hash}/{path...}", g.serve)
	mux.HandleFunc("HEAD /swarm/{hash}/{path...}", g.serve)
}

type gateway struct{ n *Node }

func gatewayError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// cleanGatewayPath splits a request path into its parts, refusing what
// could name anything outside the swarm: "..", ".", empty parts, and
// backslashes or NULs.
func cleanGatewayPath(p string) ([]string, error) {
	if p == "" {
		return nil, nil
	}
	dir := strings.HasSuffix(p, "/")
	p = strings.TrimSuffix(p, "/")
	parts := strings.Split(p, "/")
	for _, s := range parts {
		switch {
		case s == "" || s == "." || s == "..":
			return nil, fmt.Errorf("bad path %q: empty, . and .. parts are refused", p)
		case strings.ContainsAny(s, "\\\x00"):
			return nil, fmt.Errorf("bad path %q: backslashes and NULs are refused", p)
		}
	}
	if dir {
		parts = append(parts, "")
	}
	return parts, nil
}

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	h, err := meta.ParseInfoHash(r.PathValue("hash"))
	if err != nil {
		gatewayError(w, http.StatusBadRequest, err.Error())
		return
	}
	// r.PathValue is unescaped; the raw path is checked too, so that an
	// escaped ".." is refused as well.
	raw := r.PathValue("path")
	if strings.Contains(r.URL.EscapedPath(), "/../") || strings.HasSuffix(r.URL.EscapedPath(), "/..") {
		gatewayError(w, http.StatusBadRequest, "bad path: .. parts are refused")
		return
	}
	parts, err := cleanGatewayPath(raw)
	if err != nil {
		gatewayError(w, http.StatusBadRequest, err.Error())
		return
	}
	wait := gatewayWait
	if v := r.URL.Query().Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > 10*time.Minute {
			gatewayError(w, http.StatusBadRequest, fmt.Sprintf("bad wait %q: want a duration up to 10m", v))
			return
		}
	}
	s, created, err := g.swarmFor(h)
	if err != nil {
		gatewayError(w, http.StatusInternalServerError, err.Error())
		return
	}
	wctx, cancel := context.WithTimeout(r.Context(), wait)
	info, err := s.WaitInfo(wctx)
	cancel()
	if err != nil {
		if created && s.Info() == nil {
			_ = g.n.swarms.Remove(h) // nothing came: leave nothing behind
		}
		if r.Context().Err() != nil {
			return // the client went away
		}
		gatewayError(w, http.StatusNotFound, fmt.Sprintf("swarm %s: no manifest found within %s (%v)", h, wait, err))
		return
	}
	spans := info.Spans()
	want := strings.Join(parts, "/")
	if len(parts) == 0 && len(info.Files) == 0 {
		want = info.Name // the swarm of one file is that file
	}
	for _, sp := range spans {
		if strings.Join(sp.Path, "/") == want {
			g.file(w, r, s, h, sp)
			return
		}
	}
	// A directory: the root, or a prefix of some file's path.
	prefix := strings.TrimSuffix(want, "/")
	var entries []dirEntry
	seen := map[string]bool{}
	for _, sp := range spans {
		p := sp.Path
		if prefix != "" {
			pp := strings.Split(prefix, "/")
			if len(p) <= len(pp) || !slices.Equal(p[:len(pp)], pp) {
				continue
			}
			p = p[len(pp):]
		}
		e := dirEntry{Name: p[0], Size: sp.Length}
		if len(p) > 1 {
			e.Name += "/"
			e.Size = -1
		}
		if !seen[e.Name] {
			seen[e.Name] = true
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		gatewayError(w, http.StatusNotFound, fmt.Sprintf("swarm %s has no file %q", h, want))
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/") {
		http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
		return
	}
	listDir(w, r, h, prefix, entries)
}

// swarmFor finds the swarm h, or starts fetching it.
func (g *gateway) swarmFor(h meta.InfoHash) (s *swarm.Swarm, created bool, err error) {
	if s := g.n.swarms.Swarm(h); s != nil {
		return s, false, nil
	}
	dir := filepath.Join(g.n.home, gatewayDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, false, fmt.Errorf("gateway directory: %w", err)
	}
	s, err = g.n.swarms.Get(h, dir, swarm.GetOptions{})
	if err != nil {
		// Another request may have started it a moment ago.
		if s := g.n.swarms.Swarm(h); s != nil {
			return s, false, nil
		}
		return nil, false, fmt.Errorf("fetch %s: %v", h, getError(err))
	}
	return s, true, nil
}

// gatewayETag names one file of one swarm: the content cannot change
// under it, since the infohash covers every byte.
func gatewayETag(h meta.InfoHash, p []string) string {
	sum := sha1.Sum([]byte(strings.Join(p, "/")))
	return `"` + h.String() + "-" + hex.EncodeToString(sum[:6]) + `"`
}

func (g *gateway) file(w http.ResponseWriter, r *http.Request, s *swarm.Swarm, h meta.InfoHash, sp meta.Span) {
	hd := w.Header()
	hd.Set("ETag", gatewayETag(h, sp.Path))
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Accept-Ranges", "bytes")
	name := sp.Path[len(sp.Path)-1]
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		hd.Set("Content-Type", ct)
	}
	// A complete swarm is read straight from its file, which lets the
	// kernel send it (sendfile).
	if st := s.Status(); st.Complete {
		if f, err := os.Open(completePath(s, sp)); err == nil {
			defer f.Close()
			if fi, err := f.Stat(); err == nil && fi.Size() == sp.Length {
				http.ServeContent(w, r, name, time.Time{}, f)
				return
			}
		}
	}
	http.ServeContent(w, r, name, time.Time{}, &swarmFile{ctx: r.Context(), s: s, base: sp.Offset, size: sp.Length,
		pieceLen: s.Info().PieceLength})
}

// completePath is where a complete swarm keeps the file of span sp.
func completePath(s *swarm.Swarm, sp meta.Span) string {
	root := s.Path()
	if len(sp.Path) == 1 {
		return root
	}
	return filepath.Join(append([]string{root}, sp.Path[1:]...)...)
}

// swarmFile reads one file of a swarm, waiting for its pieces.
type swarmFile struct {
	ctx      context.Context
	s        *swarm.Swarm
	base     int64 // the file's offset in the swarm's data
	size     int64
	pieceLen int64
	pos      int64
}

func (f *swarmFile) Read(b []byte) (int, error) {
	if f.pos >= f.size {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), f.size-f.pos)]
	// Never more than to the end of a piece: bytes go out as each piece
	// arrives, rather than once the whole buffer's worth has.
	off := f.base + f.pos
	if end := (off/f.pieceLen + 1) * f.pieceLen; off+int64(len(b)) > end {
		b = b[:end-off]
	}
	n, err := f.s.ReadAt(f.ctx, b, off, gatewayAhead)
	f.pos += int64(n)
	if errors.Is(err, io.EOF) && f.pos < f.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (f *swarmFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	f.pos = offset
	return offset, nil
}

type dirEntry struct {
	Name string
	Size int64 // -1 for a directory
}

func listDir(w http.ResponseWriter, r *http.Request, h meta.InfoHash, prefix string, entries []dirEntry) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	if r.Method == http.MethodHead {
		return
	}
	title := h.String()
	if prefix != "" {
		title += "/" + prefix
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!doctype html><meta charset=utf-8><title>%s</title><h1>%s</h1><ul>\n",
		html.EscapeString(title), html.EscapeString(title))
	for _, e := range entries {
		size := ""
		if e.Size >= 0 {
			size = fmt.Sprintf(" (%d bytes)", e.Size)
		}
		fmt.Fprintf(&b, "<li><a href=\"%s\">%s</a>%s</li>\n",
			html.EscapeString((&url.URL{Path: e.Name}).EscapedPath()), html.EscapeString(e.Name), size)
	}
	b.WriteString("</ul>\n")
	_, _ = io.WriteString(w, b.String())
}

package node

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/overlay"
)

// The control API: HTTP and JSON, reachable only by the home's owner. It
// listens on a Unix socket in the home (mode 0600), or on 127.0.0.1 when the
// socket's path would be too long for the kernel; either way every request
// must carry the token from control.json, which only the owner can read.

// IDInfo answers GET /v1/id.
type IDInfo struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// StatusInfo answers GET /v1/status.
type StatusInfo struct {
	ID            string   `json:"id"`
	Addrs         []string `json:"addrs"`
	Version       string   `json:"version"`
	Home          string   `json:"home"`
	PID           int      `json:"pid"`
	UptimeSeconds float64  `json:"uptime_seconds"`
	Members       int      `json:"members"` // alive or suspect, self included
	// Connections counts open connections by transport (tcp, quic, ...).
	Connections map[string]int `json:"connections"`
	// The process's figures, for watching a long-running peer for leaks.
	Goroutines int    `json:"goroutines"`
	HeapBytes  uint64 `json:"heap_bytes"` // Go heap in use
	RSSBytes   int64  `json:"rss_bytes"`  // resident set (Linux; 0 elsewhere)
	// Reach is how this peer is reached: its NAT mapping, whether others
	// dialed it directly, and its role.
	Reach ReachInfo `json:"reach"`
	// HTTP is the URL of the HTTP face (metrics, gateway, dashboard), ""
	// when it is off; HTTPOpen says it answers without the token.
	HTTP     string `json:"http,omitempty"`
	HTTPOpen bool   `json:"http_open,omitempty"`
	// Group is "closed" when this peer has a cluster key (only peers with
	// the key may join, and only members are served), else "open".
	Group string `json:"group"`
}

// MemberInfo is one entry of GET /v1/members.
type MemberInfo struct {
	ID    string   `json:"id"`
	Addr  string   `json:"addr"` // first advertised address, "" if none
	Addrs []string `json:"addrs"`
	State string   `json:"state"` // alive, suspect, dead or left
	Since string   `json:"since"` // RFC 3339, when the state last changed
	Self  bool     `json:"self,omitempty"`
	// Reach is what the member advertises of its reachability; nil for a
	// peer that advertises none (an older version).
	Reach *ReachInfo `json:"reach,omitempty"`
}

// MembersInfo answers GET /v1/members.
type MembersInfo struct {
	Members []MemberInfo `json:"members"`
}

// apiError is the body of every non-200 answer.
type apiError struct {
	Error string `json:"error"`
}

// endpoint is what control.json holds.
type endpoint struct {
	Network string `json:"network"` // unix or tcp
	Address string `json:"address"`
	Token   string `json:"token"`
}

// maxUnixPath is the longest socket path the kernel takes (108 bytes with
// the terminating NUL).
const maxUnixPath = 107

type controlServer struct {
	srv      *http.Server
	ln       net.Listener
	home     string
	unixPath string
	token    string
}

func startControl(home string, n *Node, log *slog.Logger) (*controlServer, error) {
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	ep := endpoint{Token: hex.EncodeToString(tok)}
	cs := &controlServer{home: home, token: ep.Token}
	sock := filepath.Join(home, socketFile)
	var err error
	if len(sock) <= maxUnixPath {
		_ = os.Remove(sock) // left by a daemon that was killed; we hold the home lock
		cs.ln, err = net.Listen("unix", sock)
		if err == nil {
			cs.unixPath = sock
			err = os.Chmod(sock, 0o600)
		}
		ep.Network, ep.Address = "unix", sock
	} else {
		cs.ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ep.Network, ep.Address = "tcp", cs.ln.Addr().String()
		}
	}
	if err != nil {
		if cs.ln != nil {
			_ = cs.ln.Close()
		}
		return nil, fmt.Errorf("control API: %w", err)
	}
	raw, _ := json.Marshal(ep)
	if err := writeFileAtomic(filepath.Join(home, controlFile), raw, 0o600); err != nil {
		_ = cs.ln.Close()
		return nil, fmt.Errorf("control API: write %s: %w", controlFile, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/id", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, IDInfo{ID: n.ID().String(), Addrs: n.Addrs()})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, StatusInfo{
			ID:            n.ID().String(),
			Addrs:         n.Addrs(),
			Version:       Version,
			Home:          n.home,
			PID:           os.Getpid(),
			UptimeSeconds: time.Since(n.started).Seconds(),
			Members:       n.members.NumAlive(),
			Connections:   n.connectionsByTransport(),
			Goroutines:    runtime.NumGoroutine(),
			HeapBytes:     heapInUse(),
			RSSBytes:      residentBytes(),
			Reach:         reachOf(n.nat.reach.Advert()),
			HTTP:          n.face.Load().URL(),
			HTTPOpen:      n.face.Load().Open(),
			Group:         n.groupName(),
		})
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		var out MembersInfo
		out.Members = []MemberInfo{}
		for _, m := range n.members.Members() {
			mi := MemberInfo{ID: m.ID.String(), State: string(m.State), Self: m.Self, Addrs: []string{}}
			if !m.Since.IsZero() {
				mi.Since = m.Since.UTC().Format(time.RFC3339)
			}
			for _, a := range m.Addrs {
				mi.Addrs = append(mi.Addrs, a.String())
			}
			if len(mi.Addrs) > 0 {
				mi.Addr = mi.Addrs[0]
			}
			if m.Self {
				ri := reachOf(n.nat.reach.Advert())
				mi.Reach = &ri
			} else if v, ok := m.Field(overlay.MetaTagReach); ok {
				if a, err := nat.DecodeAdvert(v); err == nil {
					ri := reachOf(a)
					mi.Reach = &ri
				}
			}
			out.Members = append(out.Members, mi)
		}
		writeJSON(w, http.StatusOK, out)
	})
	registerDHT(mux, n)
	registerNames(mux, n)
	registerServices(mux, n)
	registerMail(mux, n)
	registerSwarm(mux, n)
	registerDistribute(mux, n)
	registerRON(mux, n)
	registerNAT(mux, n)
	registerCluster(mux, n)
	cs.srv = &http.Server{
		Handler:           requireToken(ep.Token, mux),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := cs.srv.Serve(cs.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control API stopped", "err", err)
		}
	}()
	return cs, nil
}

func (cs *controlServer) close() {
	_ = os.Remove(filepath.Join(cs.home, controlFile))
	_ = cs.srv.Close()
	if cs.unixPath != "" {
		_ = os.Remove(cs.unixPath)
	}
}

func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			writeJSON(w, http.StatusUnauthorized, apiError{"missing or wrong control token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/overlay"
)

// RoutesInfo is what `peer routes` prints.
type RoutesInfo struct {
	ID     string              `json:"id"`
	Routes []overlay.RouteInfo `json:"routes"`
}

func registerRON(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) {
		out := RoutesInfo{ID: n.host.ID().String(), Routes: n.router.Routes()}
		if out.Routes == nil {
			out.Routes = []overlay.RouteInfo{}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		p, err := peer.Decode(r.URL.Query().Get("peer"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("ping: bad peer ID %q: %v", r.URL.Query().Get("peer"), err)})
			return
		}
		if p == n.host.ID() {
			writeJSON(w, http.StatusBadRequest, apiError{"ping: that is this peer's own ID"})
			return
		}
		timeout := 5 * time.Second
		if t := r.URL.Query().Get("timeout"); t != "" {
			if timeout, err = time.ParseDuration(t); err != nil || timeout <= 0 || timeout > time.Minute {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("ping: bad timeout %q: want a duration up to 1m", t)})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		res, err := n.overlay.Ping(ctx, p)
		if err != nil {
			writeJSON(w, http.StatusGatewayTimeout, apiError{err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/ping/session", func(w http.ResponseWriter, r *http.Request) {
		req, err := parseSession(r.URL.Query())
		if err == nil && req.Peer == n.host.ID() {
			err = errors.New("that is this peer's own ID")
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"ping session: " + err.Error()})
			return
		}
		// One JSON object per line, each flushed as it happens.
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		enc := json.NewEncoder(w)
		_ = n.overlay.PingSession(r.Context(), req.Peer, req.Count, req.Interval, req.Timeout, func(ev overlay.PingEvent) {
			_ = enc.Encode(ev)
			if fl != nil {
				fl.Flush()
			}
		})
	})
}

// PingSessionRequest asks for a ping session on a kept stream.
type PingSessionRequest struct {
	Peer     peer.ID
	Count    int
	Interval time.Duration
	Timeout  time.Duration // per ping
}

// maxSession bounds a ping session's length.
const maxSession = 10 * time.Minute

func parseSession(q url.Values) (PingSessionRequest, error) {
	var req PingSessionRequest
	var err error
	if req.Peer, err = peer.Decode(q.Get("peer")); err != nil {
		return req, fmt.Errorf("bad peer ID %q: %v", q.Get("peer"), err)
	}
	if req.Count, err = strconv.Atoi(q.Get("count")); err != nil || req.Count < 1 {
		return req, fmt.Errorf("bad count %q: want a positive integer", q.Get("count"))
	}
	if req.Interval, err = time.ParseDuration(q.Get("interval")); err != nil || req.Interval < time.Millisecond {
		return req, fmt.Errorf("bad interval %q: want a duration of at least 1ms", q.Get("interval"))
	}
	if req.Timeout, err = time.ParseDuration(q.Get("timeout")); err != nil || req.Timeout <= 0 || req.Timeout > time.Minute {
		return req, fmt.Errorf("bad timeout %q: want a duration up to 1m", q.Get("timeout"))
	}
	if int64(req.Count) > int64(maxSession/req.Interval) { // no overflow: the interval is at least 1 ms
		return req, fmt.Errorf("a session of %d pings every %v is longer than %v", req.Count, req.Interval, maxSession)
	}
	return req, nil
}

// PingSession asks the peer to ping on one kept stream, replacing it when
// a ping goes unanswered, and calls fn with each ping as it happens.
func (c *Client) PingSession(ctx context.Context, req PingSessionRequest, fn func(overlay.PingEvent)) error {
	q := url.Values{"peer": {req.Peer.String()}, "count": {strconv.Itoa(req.Count)},
		"interval": {req.Interval.String()}, "timeout": {req.Timeout.String()}}
	return c.stream(ctx, "/v1/ping/session?"+q.Encode(), func(line []byte) error {
		var ev overlay.PingEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("bad ping event %q: %w", line, err)
		}
		fn(ev)
		return nil
	})
}

// Ping asks the peer to ping p once over the overlay.
func (c *Client) Ping(ctx context.Context, p peer.ID, timeout time.Duration) (overlay.PingResult, error) {
	var v overlay.PingResult
	q := url.Values{"peer": {p.String()}, "timeout": {timeout.String()}}
	return v, c.Get(ctx, "/v1/ping?"+q.Encode(), &v)
}

// Routes asks the peer for its RON link table and chosen paths.
func (c *Client) Routes(ctx context.Context) (RoutesInfo, error) {
	var v RoutesInfo
	return v, c.Get(ctx, "/v1/routes", &v)
}

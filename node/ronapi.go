package node

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
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

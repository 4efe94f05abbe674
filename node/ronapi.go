package node

import (
	"context"
	"net/http"

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
}

// Routes asks the peer for its RON link table and chosen paths.
func (c *Client) Routes(ctx context.Context) (RoutesInfo, error) {
	var v RoutesInfo
	return v, c.Get(ctx, "/v1/routes", &v)
}

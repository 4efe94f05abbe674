package node

// The control API of names: claim, release, resolve, and list this peer's.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/names"
)

// DefaultNameLease is how long a name's record lives unless renewed; the
// daemon renews it when half is left, for as long as it holds the name.
const DefaultNameLease = time.Hour

// NameRequest claims or releases a name.
type NameRequest struct {
	Name     string   `json:"name"`
	Services []string `json:"services,omitempty"`
	Lease    string   `json:"lease,omitempty"` // a Go duration; DefaultNameLease when empty
}

// NameInfo is a name and what it resolves to.
type NameInfo struct {
	Name      string   `json:"name"`
	Owner     string   `json:"owner"`
	Services  []string `json:"services,omitempty"`
	Claimed   string   `json:"claimed"`
	Expires   string   `json:"expires"`
	Seq       uint64   `json:"seq"`
	Replicas  int      `json:"replicas,omitempty"`
	Cached    bool     `json:"cached,omitempty"`
	AgeMs     float64  `json:"cache_age_ms,omitempty"`
	LatencyMs float64  `json:"latency_ms"`
	Released  bool     `json:"released,omitempty"`
}

// NamesInfo lists the names this peer holds.
type NamesInfo struct {
	Names []NameInfo `json:"names"`
}

func nameInfo(r names.Resolved) NameInfo {
	return NameInfo{Name: r.Name, Owner: r.Owner.String(), Services: r.Services,
		Claimed: r.Claimed.UTC().Format(time.RFC3339), Expires: r.Expires.UTC().Format(time.RFC3339), Seq: r.Seq,
		Cached: r.Cached, AgeMs: float64(r.Age.Microseconds()) / 1000}
}

// nameStatus maps an error of the names layer to an HTTP status.
func nameStatus(err error) int {
	switch {
	case errors.Is(err, names.ErrBadName):
		return http.StatusBadRequest
	case errors.Is(err, record.ErrOwned):
		return http.StatusConflict
	case errors.Is(err, names.ErrNotFound), errors.Is(err, dht.ErrNotFound):
		return http.StatusNotFound
	}
	return apiStatus(err)
}

// newResolver resolves names through the ring's first valid answer.
func (n *Node) newResolver() *names.Resolver {
	return names.NewResolver(func(ctx context.Context, key []byte) (*record.Record, error) {
		r, err := n.dht.Resolve(ctx, key)
		if errors.Is(err, dht.ErrNotFound) {
			return nil, names.ErrNotFound
		}
		return r, err
	}, nil)
}

// nameBody decodes a NameRequest and checks its name, answering 400 when
// either fails.
func nameBody(w http.ResponseWriter, r *http.Request) (NameRequest, bool) {
	var req NameRequest
	if err := decodeBody(r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return req, false
	}
	if err := names.Validate(req.Name); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return req, false
	}
	return req, true
}

func registerNames(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /v1/names/claim", func(w http.ResponseWriter, r *http.Request) {
		req, ok := nameBody(w, r)
		if !ok {
			return
		}
		lease := DefaultNameLease
		if req.Lease != "" {
			var err error
			if lease, err = time.ParseDuration(req.Lease); err != nil || lease < 10*time.Second || lease > record.MaxTTL {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("lease %q: want a duration from 10s to %v", req.Lease, record.MaxTTL)})
				return
			}
		}
		svcs := slices.Compact(slices.Sorted(slices.Values(req.Services)))
		entry := names.Entry{Services: svcs}
		if _, err := names.Decode(entry.Encode()); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		reps, err := n.dht.Claim(ctx, names.Key(req.Name), entry.Encode(), lease)
		n.names.Forget(req.Name)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{fmt.Sprintf("claim %q: %v", req.Name, err)})
			return
		}
		res, err := n.names.Resolve(ctx, req.Name)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{fmt.Sprintf("claim %q: stored, but %v", req.Name, err)})
			return
		}
		out := nameInfo(res)
		out.Replicas, out.Cached, out.AgeMs = reps, false, 0
		out.LatencyMs = float64(time.Since(start).Microseconds()) / 1000
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/names/release", func(w http.ResponseWriter, r *http.Request) {
		req, ok := nameBody(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		reps, err := n.dht.Release(ctx, names.Key(req.Name))
		n.names.Forget(req.Name)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{fmt.Sprintf("release %q: %v", req.Name, err)})
			return
		}
		writeJSON(w, http.StatusOK, NameInfo{Name: req.Name, Owner: n.host.ID().String(), Released: true, Replicas: reps,
			LatencyMs: float64(time.Since(start).Microseconds()) / 1000})
	})
	mux.HandleFunc("GET /v1/names/resolve", func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("name")
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		res, err := n.names.Resolve(ctx, name)
		if err != nil {
			writeJSON(w, nameStatus(err), apiError{err.Error()})
			return
		}
		out := nameInfo(res)
		out.LatencyMs = float64(time.Since(start).Microseconds()) / 1000
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/names", func(w http.ResponseWriter, r *http.Request) {
		owned, err := n.dht.Owned()
		if err != nil && len(owned) == 0 {
			writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
			return
		}
		out := NamesInfo{Names: []NameInfo{}}
		for _, o := range owned {
			name, ok := strings.CutPrefix(string(o.Rec.Key), "name:")
			if !ok {
				continue
			}
			res, err := names.FromRecord(name, o.Rec)
			if err != nil {
				continue
			}
			out.Names = append(out.Names, nameInfo(res))
		}
		writeJSON(w, http.StatusOK, out)
	})
}

// ClaimName claims a name for the peer.
func (c *Client) ClaimName(ctx context.Context, req NameRequest) (NameInfo, error) {
	var v NameInfo
	return v, c.Post(ctx, "/v1/names/claim", req, &v)
}

// ReleaseName releases a name the peer holds.
func (c *Client) ReleaseName(ctx context.Context, name string) (NameInfo, error) {
	var v NameInfo
	return v, c.Post(ctx, "/v1/names/release", NameRequest{Name: name}, &v)
}

// ResolveName asks the peer what a name resolves to.
func (c *Client) ResolveName(ctx context.Context, name string) (NameInfo, error) {
	var v NameInfo
	return v, c.Get(ctx, "/v1/names/resolve?name="+urlQueryEscape(name), &v)
}

// Names lists the names the peer holds.
func (c *Client) Names(ctx context.Context) (NamesInfo, error) {
	var v NamesInfo
	return v, c.Get(ctx, "/v1/names", &v)
}

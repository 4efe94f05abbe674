package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

// RingPeer is one peer on the ring, as the control API shows it.
type RingPeer struct {
	ID      string `json:"id"`
	ChordID string `json:"chord_id"`
}

// RingInfo answers GET /v1/ring.
type RingInfo struct {
	ID          string     `json:"id"`
	ChordID     string     `json:"chord_id"`
	Joined      bool       `json:"joined"`
	Predecessor *RingPeer  `json:"predecessor"`
	Successors  []RingPeer `json:"successors"`
	Fingers     []RingPeer `json:"fingers"`
}

// LookupRequest is the body of POST /v1/lookup; Key is hashed unless
// ChordID is set.
type LookupRequest struct {
	Key     string `json:"key,omitempty"`
	ChordID string `json:"chord_id,omitempty"`
}

// LookupInfo answers POST /v1/lookup.
type LookupInfo struct {
	Key       string     `json:"key,omitempty"`
	ChordID   string     `json:"chord_id"`
	Owner     RingPeer   `json:"owner"`
	Replicas  []RingPeer `json:"replicas"`
	Hops      int        `json:"hops"`
	Timeouts  int        `json:"timeouts"`
	LatencyMs float64    `json:"latency_ms"`
}

// PutRequest is the body of POST /v1/kv.
type PutRequest struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	TTL   string `json:"ttl,omitempty"` // a Go duration; default 24h
}

// PutInfo answers POST /v1/kv.
type PutInfo struct {
	Key       string  `json:"key"`
	Replicas  int     `json:"replicas"`
	Expires   string  `json:"expires"`
	LatencyMs float64 `json:"latency_ms"`
}

// GetInfo answers GET /v1/kv?key=.
type GetInfo struct {
	Key       string  `json:"key"`
	Value     string  `json:"value"`
	Publisher string  `json:"publisher"`
	Seq       uint64  `json:"seq"`
	Expires   string  `json:"expires"`
	LatencyMs float64 `json:"latency_ms"`
}

func ringPeer(p chord.Peer) RingPeer { return RingPeer{ID: p.Name, ChordID: p.ID.String()} }

func ringPeers(ps []chord.Peer) []RingPeer {
	out := []RingPeer{}
	for _, p := range ps {
		out = append(out, ringPeer(p))
	}
	return out
}

const maxAPIBody = 64 << 10

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// apiStatus maps an error to an HTTP status.
func apiStatus(err error) int {
	switch {
	case errors.Is(err, dht.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, dht.ErrNotJoined), errors.Is(err, chord.ErrNoRoute), errors.Is(err, chord.ErrLookupTimeout):
		return http.StatusServiceUnavailable
	case errors.Is(err, record.ErrOwned):
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

func registerDHT(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("GET /v1/ring", func(w http.ResponseWriter, r *http.Request) {
		st := n.dht.Ring()
		out := RingInfo{ID: st.Self.Name, ChordID: st.Self.ID.String(), Joined: st.Joined,
			Successors: ringPeers(st.Successors), Fingers: ringPeers(st.Fingers)}
		if !st.Predecessor.IsZero() {
			p := ringPeer(st.Predecessor)
			out.Predecessor = &p
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/lookup", func(w http.ResponseWriter, r *http.Request) {
		var req LookupRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		target := chord.HashID([]byte(req.Key))
		if req.ChordID != "" {
			id, err := chord.ParseID(req.ChordID)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
				return
			}
			target = id
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		res, err := n.dht.Lookup(ctx, target)
		if err != nil {
			writeJSON(w, apiStatus(err), apiError{"lookup: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, LookupInfo{Key: req.Key, ChordID: target.String(), Owner: ringPeer(res.Owner),
			Replicas: ringPeers(res.Succs), Hops: res.Hops, Timeouts: res.Timeouts,
			LatencyMs: float64(time.Since(start).Microseconds()) / 1000})
	})
	mux.HandleFunc("POST /v1/kv", func(w http.ResponseWriter, r *http.Request) {
		var req PutRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		var ttl time.Duration
		if req.TTL != "" {
			var err error
			if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("ttl %q: want a positive duration such as 90s or 12h", req.TTL)})
				return
			}
		}
		if ttl == 0 {
			ttl = dht.DefaultTTL
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		reps, err := n.dht.Put(ctx, []byte(req.Key), []byte(req.Value), ttl)
		if err != nil {
			writeJSON(w, apiStatus(err), apiError{"put: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, PutInfo{Key: req.Key, Replicas: reps,
			Expires:   start.Add(ttl).UTC().Format(time.RFC3339),
			LatencyMs: float64(time.Since(start).Microseconds()) / 1000})
	})
	mux.HandleFunc("GET /v1/kv", func(w http.ResponseWriter, r *http.Request) {
		key := r.URL.Query().Get("key")
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		start := time.Now()
		rec, _, err := n.dht.Get(ctx, []byte(key))
		if err != nil {
			if errors.Is(err, dht.ErrNotFound) {
				err = fmt.Errorf("no value for key %q", key)
				writeJSON(w, http.StatusNotFound, apiError{err.Error()})
				return
			}
			writeJSON(w, apiStatus(err), apiError{"get: " + err.Error()})
			return
		}
		pub, _ := rec.Publisher()
		writeJSON(w, http.StatusOK, GetInfo{Key: key, Value: string(rec.Value), Publisher: pub.String(), Seq: rec.Seq,
			Expires:   time.Unix(0, rec.Expires).UTC().Format(time.RFC3339),
			LatencyMs: float64(time.Since(start).Microseconds()) / 1000})
	})
}

// Ring asks for the peer's ring pointers.
func (c *Client) Ring(ctx context.Context) (RingInfo, error) {
	var v RingInfo
	return v, c.Get(ctx, "/v1/ring", &v)
}

// Lookup asks the peer to find successor(SHA-1(key)).
func (c *Client) Lookup(ctx context.Context, req LookupRequest) (LookupInfo, error) {
	var v LookupInfo
	return v, c.Post(ctx, "/v1/lookup", req, &v)
}

// Put stores a key/value record through the peer.
func (c *Client) Put(ctx context.Context, req PutRequest) (PutInfo, error) {
	var v PutInfo
	return v, c.Post(ctx, "/v1/kv", req, &v)
}

// KVGet fetches a key's value through the peer.
func (c *Client) KVGet(ctx context.Context, key string) (GetInfo, error) {
	var v GetInfo
	return v, c.Get(ctx, "/v1/kv?key="+urlQueryEscape(key), &v)
}

// Post sends body as JSON to path and decodes the answer into out.
func (c *Client) Post(ctx context.Context, path string, body, out any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, bytes.NewReader(raw), out)
}

package node

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/swarm"
)

// DistributeRequest is the body of POST /v1/distribute.
type DistributeRequest struct {
	// Path is the file or directory to share and distribute.
	Path string `json:"path"`
	// To names the targets: "all" (the default: every alive member but
	// this peer), peer IDs or names.
	To []string `json:"to,omitempty"`
	// Count, when positive, picks that many of them at random.
	Count int `json:"count,omitempty"`
	// Wait is how long a dead target is waited for, as Go writes a
	// duration ("10m"); "" is DefaultDistributeWait.
	Wait        string     `json:"wait,omitempty"`
	PieceLength units.Size `json:"piece_length,omitempty"`
	// OriginCopies bounds what this peer uploads for the job, in copies
	// of the file: nil is DefaultOriginCopies, 0 no bound. See
	// swarm.ShareOptions.EgressCopies.
	OriginCopies *float64 `json:"origin_copies,omitempty"`
}

// CheckOriginCopies checks a bound on the origin's upload, in copies.
func CheckOriginCopies(c float64) error {
	if c != 0 && !(c >= 1 && c <= 1000) {
		return fmt.Errorf("origin copies %g: want 0 (no bound) or 1 to 1000 copies of the file", c)
	}
	return nil
}

func registerDistribute(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /v1/distribute", func(w http.ResponseWriter, r *http.Request) {
		var req DistributeRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		wait := DefaultDistributeWait
		if req.Wait != "" {
			d, err := time.ParseDuration(req.Wait)
			if err != nil || d <= 0 {
				writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("wait %q: want a positive duration such as 10m", req.Wait)})
				return
			}
			wait = d
		}
		if req.OriginCopies != nil {
			if err := CheckOriginCopies(*req.OriginCopies); err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		targets, err := n.resolveTargets(ctx, req.To, req.Count)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"distribute: " + err.Error()})
			return
		}
		s, base, err := n.shareForDistribution(req)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"distribute: share: " + err.Error()})
			return
		}
		j := n.dist.startJob(s, s.Path(), targets, wait, base)
		writeJSON(w, http.StatusOK, j.view())
	})
	mux.HandleFunc("GET /v1/distribute", func(w http.ResponseWriter, r *http.Request) {
		out := []DistributeJob{}
		for _, j := range n.dist.listJobs() {
			out = append(out, j.view())
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/distribute/{id}", func(w http.ResponseWriter, r *http.Request) {
		j := n.dist.job(r.PathValue("id"))
		if j == nil {
			writeJSON(w, http.StatusNotFound, apiError{"no distribution job " + r.PathValue("id")})
			return
		}
		writeJSON(w, http.StatusOK, j.view())
	})
}

// shareForDistribution shares req.Path as `peer share` does (a path shared
// already is taken as it is) and returns the swarm and what it had
// uploaded before, so that the job counts only its own bytes.
func (n *Node) shareForDistribution(req DistributeRequest) (*swarm.Swarm, int64, error) {
	copies := DefaultOriginCopies
	if req.OriginCopies != nil {
		copies = *req.OriginCopies
	}
	s, err := n.swarms.Share(req.Path, swarm.ShareOptions{PieceLength: int64(req.PieceLength), EgressCopies: copies})
	if err != nil {
		return nil, 0, err
	}
	return s, s.Status().Uploaded, nil
}

// StartDistribute starts a distribution job.
func (c *Client) StartDistribute(ctx context.Context, req DistributeRequest) (DistributeJob, error) {
	var v DistributeJob
	return v, c.Post(ctx, "/v1/distribute", req, &v)
}

// DistributeStatus reports one job.
func (c *Client) DistributeStatus(ctx context.Context, id string) (DistributeJob, error) {
	var v DistributeJob
	return v, c.Get(ctx, "/v1/distribute/"+id, &v)
}

// DistributeJobs lists the jobs the daemon keeps.
func (c *Client) DistributeJobs(ctx context.Context) ([]DistributeJob, error) {
	var v []DistributeJob
	return v, c.Get(ctx, "/v1/distribute", &v)
}

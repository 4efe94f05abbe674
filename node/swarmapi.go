package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/overlay"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

// swarmsDir holds each swarm's manifest and progress; torrentsDir the
// .torrent files of what this peer shared.
const (
	swarmsDir   = "swarms"
	torrentsDir = "torrents"
)

// providerTTL is how long a provider record lives; swarms announce again
// well before.
const providerTTL = time.Hour

// dhtDiscovery finds swarm peers through provider records at
// successor(SHA-1("swarm:" + infohash)).
type dhtDiscovery struct{ d *dht.DHT }

func providerKey(h meta.InfoHash) []byte { return []byte("swarm:" + h.String()) }

func (x dhtDiscovery) Announce(ctx context.Context, h meta.InfoHash) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := x.d.AddProvider(ctx, providerKey(h), providerTTL)
	return err
}

func (x dhtDiscovery) FindPeers(ctx context.Context, h meta.InfoHash) ([]peer.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return x.d.FindProviders(ctx, providerKey(h))
}

// startSwarms builds the swarm manager over the overlay and resumes what
// the home was sharing or fetching.
func (n *Node) startSwarms() error {
	open := func(ctx context.Context, p peer.ID) (network.Stream, error) {
		return n.overlay.OpenStream(ctx, p, wire.Protocol, overlay.ClassThroughput)
	}
	n.swarms = swarm.NewManager(n.host, open, swarm.Config{
		UploadRate: float64(n.cfg.UploadRate), DownloadRate: float64(n.cfg.DownloadRate),
		StateDir:  filepath.Join(n.home, swarmsDir),
		Log:       n.log,
		Discovery: dhtDiscovery{n.dht},
	})
	resumed, errs := n.swarms.Resume()
	for _, err := range errs {
		n.log.Warn("a saved swarm could not be resumed", "err", err)
	}
	if len(resumed) > 0 {
		n.log.Info("resumed swarms", "count", len(resumed))
	}
	return nil
}

// getError is the answer to a get that could not start. A full disk is
// said as it is, naming the file and the space it needs.
func getError(err error) string {
	var ns *swarm.NoSpaceError
	if errors.As(err, &ns) {
		return ns.Error()
	}
	return "get: " + err.Error()
}

// Swarms is the peer's swarm manager.
func (n *Node) Swarms() *swarm.Manager { return n.swarms }

// ShareRequest is the body of POST /v1/share.
// Sizes and rates travel as text, such as "256KiB" and "2MiB/s".
type ShareRequest struct {
	Path         string     `json:"path"`
	PieceLength  units.Size `json:"piece_length,omitempty"`
	UploadRate   units.Rate `json:"upload_rate,omitempty"`
	DownloadRate units.Rate `json:"download_rate,omitempty"`
}

// ShareInfo answers POST /v1/share.
type ShareInfo struct {
	swarm.Status
	Torrent string `json:"torrent"`
}

// GetRequest is the body of POST /v1/get: an infohash (hex or base32) or a
// magnet link in Ref, or the bytes of a .torrent file in Torrent.
type GetRequest struct {
	Ref          string     `json:"ref,omitempty"`
	Torrent      []byte     `json:"torrent,omitempty"`
	Out          string     `json:"out"`
	UploadRate   units.Rate `json:"upload_rate,omitempty"`
	DownloadRate units.Rate `json:"download_rate,omitempty"`
}

// maxTorrentBody bounds POST /v1/get: a .torrent file and a little more.
const maxTorrentBody = 2*meta.MaxInfoSize + 1<<20

// ParseRef reads what `peer get` accepts: a magnet link or an infohash.
func ParseRef(ref string) (meta.InfoHash, string, error) {
	if strings.HasPrefix(strings.ToLower(ref), "magnet:") {
		return meta.ParseMagnet(ref)
	}
	h, err := meta.ParseInfoHash(ref)
	if err != nil {
		return h, "", fmt.Errorf("%q is not a magnet link, an infohash or a .torrent file", ref)
	}
	return h, "", nil
}

func registerSwarm(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("POST /v1/share", func(w http.ResponseWriter, r *http.Request) {
		var req ShareRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		s, err := n.swarms.Share(req.Path, swarm.ShareOptions{
			PieceLength: int64(req.PieceLength),
			UploadRate:  float64(req.UploadRate), DownloadRate: float64(req.DownloadRate),
		})
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"share: " + err.Error()})
			return
		}
		info := s.Info()
		tb, err := meta.MarshalTorrent(info, time.Now().Unix())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
			return
		}
		dir := filepath.Join(n.home, torrentsDir)
		tpath := filepath.Join(dir, fmt.Sprintf("%s-%s.torrent", info.Name, s.Hash().String()[:8]))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			err = writeFileAtomic(tpath, tb, 0o644)
		}
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{"write the .torrent: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, ShareInfo{Status: s.Status(), Torrent: tpath})
	})
	mux.HandleFunc("POST /v1/get", func(w http.ResponseWriter, r *http.Request) {
		var req GetRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxTorrentBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{"bad request body: " + err.Error()})
			return
		}
		o := swarm.GetOptions{UploadRate: float64(req.UploadRate), DownloadRate: float64(req.DownloadRate)}
		var h meta.InfoHash
		var err error
		switch {
		case req.Torrent != nil:
			t, err := meta.ParseTorrent(req.Torrent)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
				return
			}
			h, o.Info, o.Name = t.Hash, t.Info, t.Info.Name
		default:
			if h, o.Name, err = ParseRef(req.Ref); err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
				return
			}
		}
		if req.Out == "" {
			writeJSON(w, http.StatusBadRequest, apiError{"no output directory"})
			return
		}
		// A download that failed (a full disk) starts again from the
		// pieces it verified; any other goes to Get.
		s, restarted, err := n.swarms.Restart(h, req.Out)
		if !restarted {
			s, err = n.swarms.Get(h, req.Out, o)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{getError(err)})
			return
		}
		writeJSON(w, http.StatusOK, s.Status())
	})
	mux.HandleFunc("GET /v1/swarms", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.swarms.Swarms())
	})
	one := func(w http.ResponseWriter, r *http.Request) *swarm.Swarm {
		h, err := meta.ParseInfoHash(r.PathValue("hash"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return nil
		}
		s := n.swarms.Swarm(h)
		if s == nil {
			writeJSON(w, http.StatusNotFound, apiError{"no swarm " + h.String()})
		}
		return s
	}
	mux.HandleFunc("GET /v1/swarms/{hash}", func(w http.ResponseWriter, r *http.Request) {
		if s := one(w, r); s != nil {
			writeJSON(w, http.StatusOK, s.StatusWithConns())
		}
	})
	mux.HandleFunc("DELETE /v1/swarms/{hash}", func(w http.ResponseWriter, r *http.Request) {
		if s := one(w, r); s != nil {
			if err := n.swarms.Remove(s.Hash()); err != nil {
				writeJSON(w, http.StatusInternalServerError, apiError{err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, s.Status())
		}
	})
}

// Share asks the peer to seed path.
func (c *Client) Share(ctx context.Context, req ShareRequest) (ShareInfo, error) {
	var v ShareInfo
	return v, c.Post(ctx, "/v1/share", req, &v)
}

// StartGet asks the peer to fetch a swarm.
func (c *Client) StartGet(ctx context.Context, req GetRequest) (swarm.Status, error) {
	var v swarm.Status
	return v, c.Post(ctx, "/v1/get", req, &v)
}

// Swarms lists the peer's swarms.
func (c *Client) Swarms(ctx context.Context) ([]swarm.Status, error) {
	var v []swarm.Status
	return v, c.Get(ctx, "/v1/swarms", &v)
}

// SwarmStatus reports one swarm.
func (c *Client) SwarmStatus(ctx context.Context, hash string) (swarm.Status, error) {
	var v swarm.Status
	return v, c.Get(ctx, "/v1/swarms/"+hash, &v)
}

// RemoveSwarm stops a swarm and forgets it.
func (c *Client) RemoveSwarm(ctx context.Context, hash string) error {
	var v swarm.Status
	return c.do(ctx, http.MethodDelete, "/v1/swarms/"+hash, nil, &v)
}

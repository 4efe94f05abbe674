package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/overlay"
)

// Closed groups. A peer whose config names a cluster key file runs a
// closed group: memberlist seals its gossip with the key (a peer without
// it cannot join), and every other protocol this peer serves answers
// members only. The gate is one wrapper around the host that the layers
// register their handlers on; memberlist alone gets the bare host, since
// its own packets are how a peer becomes a member. libp2p's built-in
// protocols (identify, hole punching) stay open: they carry no data of the
// group and a connection needs them.
//
// The key file holds one standard base64 32-byte key per line (blank
// lines and lines starting with # are skipped). The first is the primary,
// used to seal; all are accepted to open.

// ClosedGroup says whether this peer runs a closed group (it has a
// cluster key).
func (n *Node) ClosedGroup() bool { return n.members != nil && n.members.Closed() }

// IsMember says whether p is in the group as this peer sees it: alive (or
// suspect, which memberlist reports as alive).
func (n *Node) IsMember(p peer.ID) bool { return n.members != nil && n.members.IsAlive(p) }

// groupName is "open" or "closed", for status.
func (n *Node) groupName() string {
	if n.ClosedGroup() {
		return "closed"
	}
	return "open"
}

// clusterKeyPath is the key file the config names, relative paths taken
// from the home; "" for an open group.
func (c Config) clusterKeyPath(home string) string {
	p := strings.TrimSpace(c.ClusterKey)
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(home, p)
}

// ErrClusterKeyFile marks every problem with a cluster key file.
var ErrClusterKeyFile = errors.New("cluster key file")

// LoadClusterKeys reads a key file. warning is non-empty when the file
// can be read by other users (the keys still load).
func LoadClusterKeys(path string) (keys [][]byte, warning string, err error) {
	fail := func(f string, a ...any) ([][]byte, string, error) {
		return nil, "", fmt.Errorf("%w %s: %s", ErrClusterKeyFile, path, fmt.Sprintf(f, a...))
	}
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fail("does not exist; create one with `peer keygen %s`", path)
	}
	if err != nil {
		return fail("%v", err)
	}
	if info.IsDir() {
		return fail("is a directory, not a key file")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return fail("%v", err)
	}
	keys, err = parseClusterKeys(raw)
	if err != nil {
		return fail("%v", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("cluster key file %s can be read by other users (mode %04o); `chmod 600 %s`", path, info.Mode().Perm(), path)
	}
	return keys, warning, nil
}

func parseClusterKeys(raw []byte) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := DecodeClusterKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		for _, have := range keys {
			if bytes.Equal(have, k) {
				return nil, fmt.Errorf("line %d: the same key twice", i+1)
			}
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("holds no key (want one base64 32-byte key per line)")
	}
	return keys, nil
}

// DecodeClusterKey reads one key: standard base64 of 32 bytes.
func DecodeClusterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if _, err := hex.DecodeString(s); err == nil && len(s) == 2*overlay.ClusterKeySize {
		return nil, errors.New("looks like hex; a key file holds base64 (as `peer keygen` writes)")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64 (a key is 32 random bytes in standard base64, as `peer keygen` writes)")
	}
	if len(k) != overlay.ClusterKeySize {
		return nil, fmt.Errorf("a key of %d bytes; a cluster key is %d bytes (44 characters of base64)", len(k), overlay.ClusterKeySize)
	}
	return k, nil
}

// EncodeClusterKey writes a key as a key file holds it.
func EncodeClusterKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// NewClusterKey makes a random key.
func NewClusterKey() []byte {
	k := make([]byte, overlay.ClusterKeySize)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return k
}

func marshalClusterKeys(keys [][]byte) []byte {
	var b bytes.Buffer
	b.WriteString("# peer cluster keys, one base64 32-byte key per line; the first is the primary.\n")
	for _, k := range keys {
		b.WriteString(EncodeClusterKey(k) + "\n")
	}
	return b.Bytes()
}

// WriteNewClusterKeyFile creates path (mode 0600) with one new key. It
// refuses to replace an existing file.
func WriteNewClusterKeyFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w %s: already exists; not replaced", ErrClusterKeyFile, path)
		}
		return fmt.Errorf("%w %s: %v", ErrClusterKeyFile, path, err)
	}
	_, err = f.Write(marshalClusterKeys([][]byte{NewClusterKey()}))
	if serr := f.Sync(); err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("%w %s: %v", ErrClusterKeyFile, path, err)
	}
	return nil
}

// The gate.

// memberWait is how long a stream from a peer not (yet) in the group
// waits for gossip to bring it in before it is refused: a peer that just
// joined through one member opens streams to others that may not have
// heard of it.
const (
	memberWait       = 3 * time.Second
	memberPoll       = 100 * time.Millisecond
	refuseLogEvery   = time.Minute
	refusedNoWaitFor = 10 * time.Second // a peer refused this recently is not waited for again
)

type memberGate struct {
	isMember func(peer.ID) bool
	log      *slog.Logger
	stop     chan struct{}

	mu      sync.Mutex
	refused map[peer.ID]time.Time // last refusal
	logged  map[peer.ID]time.Time // last refusal logged
}

func newMemberGate(isMember func(peer.ID) bool, log *slog.Logger) *memberGate {
	return &memberGate{isMember: isMember, log: log, stop: make(chan struct{}),
		refused: map[peer.ID]time.Time{}, logged: map[peer.ID]time.Time{}}
}

func (g *memberGate) close() { close(g.stop) }

// admit says whether p may use this peer's services, waiting a little for
// a peer the group has not told us of yet.
func (g *memberGate) admit(p peer.ID) bool {
	if g.isMember(p) {
		return true
	}
	g.mu.Lock()
	recent := time.Since(g.refused[p]) < refusedNoWaitFor
	g.mu.Unlock()
	if recent {
		return false
	}
	deadline := time.NewTimer(memberWait)
	defer deadline.Stop()
	tick := time.NewTicker(memberPoll)
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return false
		case <-deadline.C:
			return g.isMember(p)
		case <-tick.C:
			if g.isMember(p) {
				return true
			}
		}
	}
}

// refuse records a refusal and logs it, once per peer per minute.
func (g *memberGate) refuse(p peer.ID, proto protocol.ID) {
	now := time.Now()
	g.mu.Lock()
	if len(g.refused) > 4096 {
		for q, at := range g.refused {
			if now.Sub(at) > refuseLogEvery {
				delete(g.refused, q)
				delete(g.logged, q)
			}
		}
	}
	g.refused[p] = now
	say := now.Sub(g.logged[p]) >= refuseLogEvery
	if say {
		g.logged[p] = now
	}
	g.mu.Unlock()
	if say {
		g.log.Info("refused a stream from a peer that is not a member of this closed group",
			"peer", p, "protocol", proto, "next_report_in", refuseLogEvery.String())
	}
}

func (g *memberGate) wrap(proto protocol.ID, h network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		p := s.Conn().RemotePeer()
		if !g.admit(p) {
			g.refuse(p, s.Protocol())
			_ = s.Reset()
			return
		}
		h(s)
	}
}

// memberHost is the host the layers of a closed group are given: every
// handler registered on it serves members only.
type memberHost struct {
	host.Host
	gate *memberGate
}

func (h *memberHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, h.gate.wrap(pid, handler))
}

func (h *memberHost) SetStreamHandlerMatch(pid protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	h.Host.SetStreamHandlerMatch(pid, match, h.gate.wrap(pid, handler))
}

// Key rotation through the control API.

// ClusterKeyInfo is one installed key, by fingerprint.
type ClusterKeyInfo struct {
	Fingerprint string `json:"fingerprint"`
	Primary     bool   `json:"primary"`
}

// ClusterKeysInfo answers GET and POST /v1/cluster/keys.
type ClusterKeysInfo struct {
	Group string           `json:"group"` // open or closed
	File  string           `json:"file,omitempty"`
	Keys  []ClusterKeyInfo `json:"keys"`
}

// ClusterKeyRequest is the body of POST /v1/cluster/keys. Key is the key
// itself (base64) or, for use and remove, its fingerprint.
type ClusterKeyRequest struct {
	Op  string `json:"op"` // add, use or remove
	Key string `json:"key"`
}

func (n *Node) clusterKeys() ClusterKeysInfo {
	out := ClusterKeysInfo{Group: n.groupName(), File: n.keyPath, Keys: []ClusterKeyInfo{}}
	for i, k := range n.members.Keys() {
		out.Keys = append(out.Keys, ClusterKeyInfo{Fingerprint: overlay.KeyFingerprint(k), Primary: i == 0})
	}
	return out
}

// errBadKeyRequest marks a request to refuse with 400.
var errBadKeyRequest = errors.New("bad cluster key request")

// changeClusterKey applies one rotation step to the live keyring, then
// writes the key file to match; if the file cannot be written the keyring
// is put back, so the two never disagree.
func (n *Node) changeClusterKey(req ClusterKeyRequest) error {
	if !n.ClosedGroup() {
		return overlay.ErrOpenGroup
	}
	n.keyMu.Lock()
	defer n.keyMu.Unlock()
	before := n.members.Keys()
	key, err := n.resolveKey(req, before)
	if err != nil {
		return err
	}
	var undo func()
	switch req.Op {
	case "add":
		if err = n.members.AddKey(key); err == nil {
			undo = func() { _ = n.members.RemoveKey(key) }
		}
	case "use":
		if err = n.members.UseKey(key); err == nil {
			undo = func() { _ = n.members.UseKey(before[0]) }
		}
	case "remove":
		if err = n.members.RemoveKey(key); err == nil {
			undo = func() { _ = n.members.AddKey(key) }
		}
	default:
		return fmt.Errorf("%w: op %q: want add, use or remove", errBadKeyRequest, req.Op)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errBadKeyRequest, req.Op, err)
	}
	if err := atomicfile.Write(n.keyPath, marshalClusterKeys(n.members.Keys()), 0o600); err != nil {
		undo()
		return fmt.Errorf("cluster key %s not applied: cannot write %s: %w", req.Op, n.keyPath, err)
	}
	n.log.Info("cluster keyring changed", "op", req.Op, "key", overlay.KeyFingerprint(key),
		"primary", overlay.KeyFingerprint(n.members.Keys()[0]), "file", n.keyPath)
	return nil
}

// resolveKey reads the request's key: a base64 key, or for use and remove
// the fingerprint of an installed one.
func (n *Node) resolveKey(req ClusterKeyRequest, installed [][]byte) ([]byte, error) {
	s := strings.TrimSpace(req.Key)
	if s == "" {
		return nil, fmt.Errorf("%w: no key given", errBadKeyRequest)
	}
	if strings.HasPrefix(s, "sha256:") {
		if req.Op == "add" {
			return nil, fmt.Errorf("%w: add needs the key itself, not its fingerprint", errBadKeyRequest)
		}
		for _, k := range installed {
			if overlay.KeyFingerprint(k) == s {
				return k, nil
			}
		}
		return nil, fmt.Errorf("%w: no installed key has fingerprint %s", errBadKeyRequest, s)
	}
	k, err := DecodeClusterKey(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadKeyRequest, err)
	}
	return k, nil
}

func registerCluster(mux *http.ServeMux, n *Node) {
	mux.HandleFunc("GET /v1/cluster/keys", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.clusterKeys())
	})
	mux.HandleFunc("POST /v1/cluster/keys", func(w http.ResponseWriter, r *http.Request) {
		var req ClusterKeyRequest
		if err := decodeBody(r, &req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
			return
		}
		if err := n.changeClusterKey(req); err != nil {
			status := http.StatusInternalServerError
			switch {
			case errors.Is(err, errBadKeyRequest):
				status = http.StatusBadRequest
			case errors.Is(err, overlay.ErrOpenGroup):
				status = http.StatusConflict
			}
			writeJSON(w, status, apiError{strings.TrimPrefix(err.Error(), errBadKeyRequest.Error()+": ")})
			return
		}
		writeJSON(w, http.StatusOK, n.clusterKeys())
	})
}

// ClusterKeys lists the daemon's cluster keys by fingerprint.
func (c *Client) ClusterKeys(ctx context.Context) (ClusterKeysInfo, error) {
	var v ClusterKeysInfo
	return v, c.Get(ctx, "/v1/cluster/keys", &v)
}

// ChangeClusterKey adds, uses or removes a cluster key on the daemon.
func (c *Client) ChangeClusterKey(ctx context.Context, op, key string) (ClusterKeysInfo, error) {
	var v ClusterKeysInfo
	return v, c.Post(ctx, "/v1/cluster/keys", ClusterKeyRequest{Op: op, Key: key}, &v)
}

// clusterKeyReason is the plain-words cause of a join that failed on the
// cluster key.
func clusterKeyReason(err error) string {
	for _, e := range []error{overlay.ErrClusterKeyMismatch, overlay.ErrClusterKeyMissing, overlay.ErrGroupNotClosed} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return err.Error()
}

// SetClusterKey points the config file of home at the key file path
// (checked first), closing the group from the next start.
func SetClusterKey(home, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if _, _, err := LoadClusterKeys(abs); err != nil {
		return err
	}
	cfgPath := filepath.Join(home, ConfigFile)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return err
	}
	cfg.ClusterKey = abs
	return writeFileAtomic(cfgPath, cfg.Marshal(), 0o600)
}

package node

import (
	"bytes"
	"crypto/rand"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/swarm/meta"
)

const fuzzPeerID = "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF"

// FuzzParseBootstrap: a bootstrap address from config.toml or a flag.
// What parses names a peer and at least one transport address, and each
// address written back with /p2p/<id> parses to that peer and address.
func FuzzParseBootstrap(f *testing.F) {
	for _, s := range []string{
		"/ip4/198.18.0.1/tcp/4001/p2p/" + fuzzPeerID,
		"/ip6/::1/udp/4001/quic-v1/p2p/" + fuzzPeerID,
		"/dns4/example.invalid/tcp/1/p2p/" + fuzzPeerID,
		"/ip4/198.18.0.1/tcp/4001",
		"/p2p/" + fuzzPeerID,
		"/ip4/1.2.3.4/tcp/1/p2p/" + fuzzPeerID + "/p2p-circuit/p2p/" + fuzzPeerID,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ai, err := ParseBootstrap(s)
		if err != nil {
			return
		}
		if ai.ID == "" || ai.ID.Validate() != nil || len(ai.Addrs) == 0 {
			t.Fatalf("ParseBootstrap(%q) = %+v", s, ai)
		}
		p2p, err := peer.AddrInfoToP2pAddrs(&ai)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range p2p {
			back, err := ParseBootstrap(a.String())
			if err != nil {
				t.Fatalf("%q: address %s does not parse back: %v", s, a, err)
			}
			if back.ID != ai.ID || len(back.Addrs) != 1 || !back.Addrs[0].Equal(ai.Addrs[i]) {
				t.Fatalf("%q: address %s parses back as %+v", s, a, back)
			}
		}
	})
}

// sameConfig compares configs, an empty list and none being the same.
func sameConfig(a, b Config) bool {
	if !slices.Equal(a.Listen, b.Listen) || !slices.Equal(a.Bootstrap, b.Bootstrap) {
		return false
	}
	a.Listen, b.Listen, a.Bootstrap, b.Bootstrap = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

// FuzzLoadConfig: config.toml as a user may have edited it. LoadConfig
// either refuses it, naming the file, or returns a config that validates
// and that Marshal writes back as a file loading to the same config.
func FuzzLoadConfig(f *testing.F) {
	dir := f.TempDir()
	cfg := DefaultConfig()
	f.Add(cfg.Marshal())
	cfg.Bootstrap = []string{"/ip4/198.18.0.1/tcp/4001/p2p/" + fuzzPeerID}
	cfg.Membership, cfg.LogLevel, cfg.UploadRate = "wan", "DEBUG", 4<<20
	cfg.Listen = append(cfg.Listen, "/ip6/::/tcp/4001")
	f.Add(cfg.Marshal())
	f.Add([]byte("listen = [\"/ip4/0.0.0.0/tcp/1\"]\nupload_rate = \"1.5k\"\n"))
	f.Add([]byte("max_memory_mib = -1\n"))
	f.Add([]byte("conn_low_water = 1\nconn_high_water = 1\n"))
	f.Add([]byte("[table]\nx = 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, ConfigFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadConfig(path)
		if err != nil {
			if !bytes.Contains([]byte(err.Error()), []byte(path)) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("loaded a config that does not validate: %v", err)
		}
		out := got.Marshal()
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("the loaded config, written out, does not load: %v\n%s", err, out)
		}
		if !sameConfig(again, got) {
			t.Fatalf("config changed on writing out and loading:\n got %+v\nwant %+v", again, got)
		}
	})
}

// FuzzLoadIdentity: identity.key as found in a home. LoadIdentity returns
// an Ed25519 key or an error, never panics; a key it returns marshals to
// a file that loads to the same key.
func FuzzLoadIdentity(f *testing.F) {
	dir := f.TempDir()
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	raw, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	ek, _, err := crypto.GenerateECDSAKeyPair(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	if raw, err := crypto.MarshalPrivateKey(ek); err == nil {
		f.Add(raw)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, IdentityFile)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := LoadIdentity(dir)
		if err != nil {
			return
		}
		if k.Type() != crypto.Ed25519 {
			t.Fatalf("loaded a %s key", k.Type())
		}
		raw, err := crypto.MarshalPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadIdentity(dir)
		if err != nil || !again.Equals(k) {
			t.Fatalf("a loaded key, written back, loads as %v, %v", again, err)
		}
		if _, err := PeerIDOf(dir); err != nil {
			t.Fatalf("PeerIDOf a loadable identity: %v", err)
		}
	})
}

// FuzzNewClient: control.json as a client finds it in a home (written by
// the daemon, but a client must survive a damaged one). NewClient returns
// a client for a unix or tcp endpoint, or an error; it dials nothing.
func FuzzNewClient(f *testing.F) {
	dir := f.TempDir()
	f.Add([]byte(`{"network":"unix","address":"/tmp/x/control.sock","token":"ab"}`))
	f.Add([]byte(`{"network":"tcp","address":"127.0.0.1:1","token":""}`))
	f.Add([]byte(`{"network":"udp"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, controlFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(dir)
		if err != nil {
			if c != nil {
				t.Fatal("NewClient returned a client and an error")
			}
			return
		}
		if c.ep.Network != "unix" && c.ep.Network != "tcp" {
			t.Fatalf("client for network %q", c.ep.Network)
		}
	})
}

// FuzzParseRef: what `peer get` and POST /v1/get take as Ref. What parses
// is an infohash that, as a magnet link with the name, parses back the same.
func FuzzParseRef(f *testing.F) {
	h := meta.InfoHash{1, 2, 3}
	f.Add(h.String())
	f.Add(meta.Magnet(h, "a name"))
	f.Add("MAGNET:?xt=urn:btih:" + h.String())
	f.Add("not a ref")
	f.Fuzz(func(t *testing.T, s string) {
		h, name, err := ParseRef(s)
		if err != nil {
			return
		}
		h2, name2, err := ParseRef(meta.Magnet(h, name))
		if err != nil || h2 != h || name2 != name {
			t.Fatalf("%q: %s %q does not round-trip as a magnet link: %s %q %v", s, h, name, h2, name2, err)
		}
	})
}

// FuzzParseSession: the query of GET /v1/ping/session. What parses names a
// peer and stays within the session bounds; a request built back from it
// (as the client builds it) parses to the same request.
func FuzzParseSession(f *testing.F) {
	f.Add(fuzzPeerID, "10", "1s", "5s")
	f.Add(fuzzPeerID, "600", "1s", "1m")
	f.Add(fuzzPeerID, "100", "1ms", "1s")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, p, count, interval, timeout string) {
		q := url.Values{"peer": {p}, "count": {count}, "interval": {interval}, "timeout": {timeout}}
		req, err := parseSession(q)
		if err != nil {
			return
		}
		if req.Peer.Validate() != nil || req.Count < 1 || req.Interval < time.Millisecond ||
			req.Timeout <= 0 || req.Timeout > time.Minute ||
			float64(req.Count)*float64(req.Interval) > float64(maxSession) {
			t.Fatalf("accepted %+v", req)
		}
		back := url.Values{"peer": {req.Peer.String()}, "count": {strconv.Itoa(req.Count)},
			"interval": {req.Interval.String()}, "timeout": {req.Timeout.String()}}
		again, err := parseSession(back)
		if err != nil || again != req {
			t.Fatalf("%+v does not round-trip: %+v, %v", req, again, err)
		}
	})
}

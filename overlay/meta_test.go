package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func mustAddrs(t testing.TB, ss ...string) []ma.Multiaddr {
	t.Helper()
	out := make([]ma.Multiaddr, len(ss))
	for i, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a
	}
	return out
}

func TestMetaRoundTrip(t *testing.T) {
	addrs := mustAddrs(t, "/ip4/198.18.0.1/tcp/4001", "/ip4/198.18.0.1/udp/4001/quic-v1", "/ip6/::1/tcp/4001")
	m, err := decodeMeta(encodeMeta(nodeMeta{addrs: addrs, leaving: true}, 512))
	if err != nil {
		t.Fatal(err)
	}
	if !m.leaving {
		t.Error("leaving flag lost")
	}
	got := m.addrs
	if len(got) != len(addrs) {
		t.Fatalf("got %d addresses, want %d", len(got), len(addrs))
	}
	for i := range addrs {
		if !got[i].Equal(addrs[i]) {
			t.Errorf("address %d: got %s, want %s", i, got[i], addrs[i])
		}
	}
}

func TestMetaKeepsWithinLimit(t *testing.T) {
	var addrs []ma.Multiaddr
	for i := 0; i < 100; i++ {
		addrs = append(addrs, mustAddrs(t, "/ip4/198.18.0.1/udp/4001/quic-v1")...)
	}
	b := encodeMeta(nodeMeta{addrs: addrs}, 64)
	if len(b) > 64 {
		t.Fatalf("encoded %d bytes, limit 64", len(b))
	}
	got, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.addrs) == 0 || len(got.addrs) >= 100 || got.leaving {
		t.Fatalf("kept %d addresses (leaving %v); want some but not all", len(got.addrs), got.leaving)
	}
}

func TestMetaRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"version":   {9},
		"no flags":  {metaVersion},
		"truncated": {metaVersion, 0, 20, 4, 1},
		"garbage":   {metaVersion, 0, 3, 0xff, 0xff, 0xff},
	} {
		if _, err := decodeMeta(in); !errors.Is(err, ErrBadMeta) {
			t.Errorf("%s: got %v, want ErrBadMeta", name, err)
		}
	}
	if got, err := decodeMeta(nil); err != nil || got.addrs != nil || got.leaving {
		t.Errorf("empty metadata: got %v, %v; want nothing and no error", got, err)
	}
}

// FuzzDecodeMeta: any input decodes or fails cleanly; what decodes survives
// re-encoding and decoding again.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(nodeMeta{addrs: mustAddrs(f, "/ip4/198.18.0.1/tcp/4001")}, 512))
	f.Add([]byte{metaVersion, metaLeaving, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decodeMeta(in)
		if err != nil {
			return
		}
		m2, err := decodeMeta(encodeMeta(m, 1<<20))
		if err != nil {
			t.Fatalf("re-encoded metadata does not decode: %v", err)
		}
		if m2.leaving != m.leaving || len(m2.addrs) != len(m.addrs) || len(m2.fields) != len(m.fields) {
			t.Fatalf("metadata changed on re-encoding: %+v vs %+v", m2, m)
		}
		for i := range m.addrs {
			if !m.addrs[i].Equal(m2.addrs[i]) {
				t.Fatalf("address %d changed on re-encoding", i)
			}
		}
	})
}

// A field this peer does not know (added by a newer peer, say NAT
// reachability) is skipped, wherever it stands: the addresses around it
// still decode, and the field is kept as it came.
func TestMetaSkipsFieldsItDoesNotKnow(t *testing.T) {
	addrs := mustAddrs(t, "/ip4/198.18.0.1/tcp/4001", "/ip4/198.18.0.1/udp/4001/quic-v1")
	b := []byte{metaVersion, 0}
	field := func(tag uint64, v []byte) {
		b = binary.AppendUvarint(b, tag)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	field(tagAddr, addrs[0].Bytes())
	field(77, []byte("reachability: easy"))
	field(1<<40, nil) // a large tag, empty
	field(tagAddr, addrs[1].Bytes())
	m, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.addrs) != 2 || !m.addrs[0].Equal(addrs[0]) || !m.addrs[1].Equal(addrs[1]) {
		t.Fatalf("addresses around unknown fields: %v", m.addrs)
	}
	if v, ok := m.field(77); !ok || string(v) != "reachability: easy" {
		t.Fatalf("unknown field 77: %q, %v", v, ok)
	}
	if _, ok := m.field(1 << 40); !ok {
		t.Fatal("empty unknown field lost")
	}
	// Re-encoded, the fields travel on, after the addresses.
	m2, err := decodeMeta(encodeMeta(m, 512))
	if err != nil || len(m2.fields) != 2 || len(m2.addrs) != 2 {
		t.Fatalf("re-encoded: %+v, %v", m2, err)
	}
}

// Metadata of the first version (every entry an address) still reads.
func TestMetaReadsVersion1(t *testing.T) {
	addrs := mustAddrs(t, "/ip4/198.18.0.1/tcp/4001", "/ip6/::1/tcp/4001")
	b := []byte{metaVersionV1, metaLeaving}
	for _, a := range addrs {
		b = binary.AppendUvarint(b, uint64(len(a.Bytes())))
		b = append(b, a.Bytes()...)
	}
	m, err := decodeMeta(b)
	if err != nil || !m.leaving || len(m.addrs) != 2 || !m.addrs[1].Equal(addrs[1]) {
		t.Fatalf("version 1: %+v, %v", m, err)
	}
}

// Addresses come first under the limit; a field that does not fit whole is
// left out rather than cut.
func TestMetaFieldsAfterAddressesWithinLimit(t *testing.T) {
	addrs := mustAddrs(t, "/ip4/198.18.0.1/tcp/4001")
	m := nodeMeta{addrs: addrs, fields: []MetaField{{Tag: 5, Value: make([]byte, 40)}, {Tag: 6, Value: []byte{1}}}}
	b := encodeMeta(m, 2+2+len(addrs[0].Bytes())+2+10)
	got, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.addrs) != 1 {
		t.Fatalf("the address did not come first: %+v", got)
	}
	if _, ok := got.field(5); ok {
		t.Fatal("a field too large for the limit was kept")
	}
	if v, ok := got.field(6); !ok || len(v) != 1 {
		t.Fatal("a field that fits was left out")
	}
}

func TestAdvertiseAddrPrefersRoutable(t *testing.T) {
	ip, port, ok := advertiseAddr(mustAddrs(t, "/ip4/127.0.0.1/tcp/4001", "/ip4/0.0.0.0/tcp/4001", "/ip4/198.18.0.7/tcp/4002"))
	if !ok || ip.String() != "198.18.0.7" || port != 4002 {
		t.Fatalf("got %v:%d (%v), want 198.18.0.7:4002", ip, port, ok)
	}
	ip, port, ok = advertiseAddr(mustAddrs(t, "/ip4/127.0.0.1/udp/5000/quic-v1"))
	if !ok || !ip.IsLoopback() || port != 5000 {
		t.Fatalf("loopback only: got %v:%d (%v), want 127.0.0.1:5000", ip, port, ok)
	}
	if _, _, ok := advertiseAddr(nil); ok {
		t.Fatal("no addresses: want ok=false")
	}
}

func TestAddrsFromHostPort(t *testing.T) {
	got := addrsFromHostPort("198.18.0.3:4001")
	if len(got) != 2 || got[0].String() != "/ip4/198.18.0.3/tcp/4001" || got[1].String() != "/ip4/198.18.0.3/udp/4001/quic-v1" {
		t.Fatalf("got %v", got)
	}
	for _, bad := range []string{"", "198.18.0.3", "host:4001", "198.18.0.3:0", "198.18.0.3:70000"} {
		if got := addrsFromHostPort(bad); got != nil {
			t.Errorf("%q: got %v, want nothing", bad, got)
		}
	}
}

func TestIPPort(t *testing.T) {
	for in, want := range map[string]string{
		"/ip4/198.18.0.1/tcp/4001":  "198.18.0.1 tcp 4001",
		"/ip6/::1/udp/4002/quic-v1": "::1 udp 4002",
		"/ip4/198.18.0.2/tcp/1/p2p/" + "12D3KooWGLfELiaEQAvdvfi5325RqfyfXwYiUYc3DuTjJKE66xFF": "198.18.0.2 tcp 1",
	} {
		ip, network, port, ok := IPPort(mustAddrs(t, in)[0])
		if got := fmt.Sprintf("%s %s %d", ip, network, port); !ok || got != want {
			t.Errorf("IPPort(%s) = %q (%v), want %q", in, got, ok, want)
		}
	}
	if _, _, _, ok := IPPort(mustAddrs(t, "/dns4/example.invalid/tcp/4001")[0]); ok {
		t.Error("a DNS name has no IP: want ok=false")
	}
}

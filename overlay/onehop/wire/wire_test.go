package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func TestFwdHeaderRoundTripLeavesTheRest(t *testing.T) {
	_, id := newKey(t)
	b := AppendFwdHeader(nil, id)
	b = append(b, "noise bytes"...)
	r := bytes.NewReader(b)
	got, err := ReadFwdHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	if got != id {
		t.Fatalf("header names %s, want %s", got, id)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "noise bytes" {
		t.Fatalf("decoder took bytes past the header: %q left", rest)
	}
}

func TestFwdHeaderRefusesMalformed(t *testing.T) {
	_, id := newKey(t)
	good := AppendFwdHeader(nil, id)
	cases := map[string][]byte{
		"empty":        {},
		"version":      append([]byte{2}, good[1:]...),
		"zero length":  {1, 0},
		"too long":     {1, 0x81, 0x01},
		"truncated id": good[:len(good)-3],
		"not a peer":   {1, 3, 'a', 'b', 'c'},
		"bad varint":   {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	}
	for name, b := range cases {
		if p, err := ReadFwdHeader(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: decoded %s from %x", name, p, b)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	if err := ReadStatus(bytes.NewReader(AppendStatus(nil, ""))); err != nil {
		t.Fatalf("accepted status read as %v", err)
	}
	err := ReadStatus(bytes.NewReader(AppendStatus(nil, "not a member")))
	var ref *RefusedError
	if !errors.As(err, &ref) || ref.Reason != "not a member" {
		t.Fatalf("refusal read as %v", err)
	}
	// A long reason is cut on a rune boundary and still reads.
	long := strings.Repeat("é", MaxReasonLen)
	err = ReadStatus(bytes.NewReader(AppendStatus(nil, long)))
	if !errors.As(err, &ref) || len(ref.Reason) > MaxReasonLen || !strings.HasPrefix(long, ref.Reason) {
		t.Fatalf("long refusal read as %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":      {},
		"unknown":    {7},
		"truncated":  {1, 5, 'a'},
		"too long":   {1, 0x81, 0x08},
		"not utf8":   {1, 2, 0xff, 0xfe},
		"bad varint": {1, 0xff},
		"no reason":  {1, 0},
	} {
		// Nothing malformed reads as accepted or as a refusal.
		if err := ReadStatus(bytes.NewReader(b)); err == nil || errors.As(err, &ref) {
			t.Errorf("%s: %x read as %v", name, b, err)
		}
	}
}

func FuzzReadFwdHeader(f *testing.F) {
	_, id := newKey(f)
	f.Add(AppendFwdHeader(nil, id))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadFwdHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What decodes encodes to the same bytes it came from.
		enc := AppendFwdHeader(nil, p)
		if !bytes.Equal(enc, b[:len(enc)]) {
			t.Fatalf("header %x decoded to %s, which encodes as %x", b, p, enc)
		}
	})
}

func FuzzReadStatus(f *testing.F) {
	f.Add(AppendStatus(nil, ""))
	f.Add(AppendStatus(nil, "no"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ReadStatus(bytes.NewReader(b))
		var ref *RefusedError
		if err == nil {
			if b[0] != statusOK {
				t.Fatalf("status %x read as accepted", b)
			}
			return
		}
		if errors.As(err, &ref) {
			enc := AppendStatus(nil, ref.Reason)
			if !bytes.Equal(enc, b[:len(enc)]) {
				t.Fatalf("status %x read as %q, which encodes as %x", b, ref.Reason, enc)
			}
		}
	})
}

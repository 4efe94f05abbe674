package ron

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newKey(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

func sampleRow(t testing.TB) (*SignedRow, crypto.PrivKey) {
	k, id := newKey(t)
	_, other := newKey(t)
	r := &SignedRow{Owner: id, Seq: 42, Entries: []Entry{
		{To: HashPeer(other), Link: LinkState{RTTms: 12.345, Loss: 0.05, Tput: 10 << 20}},
		{To: HashPeer("x"), Link: LinkState{RTTms: 3, Down: true}},
	}}
	if err := r.Sign(k); err != nil {
		t.Fatal(err)
	}
	return r, k
}

func TestRowRoundTripAndSignature(t *testing.T) {
	r, _ := sampleRow(t)
	b, err := (&Message{Type: MsgRow, Row: r}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadMessage(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Row.Verify(); err != nil {
		t.Fatalf("a decoded row does not verify: %v", err)
	}
	got := m.Row.Entries[0].Link
	if got.RTTms != 12.345 || got.Loss != 0.05 || got.Tput != 10<<20 || !m.Row.Entries[1].Link.Down {
		t.Fatalf("entries changed on the way: %+v", m.Row.Entries)
	}
	// Any change to what was signed breaks the signature.
	m.Row.Entries[0].Link.RTTms = 1
	if err := m.Row.Verify(); !errors.Is(err, ErrSignature) {
		t.Fatalf("a tampered row verifies: %v", err)
	}
	// A row claiming another owner does not verify with the signer's sig.
	_, mallory := newKey(t)
	forged := *r
	forged.Owner = mallory
	if err := forged.Verify(); !errors.Is(err, ErrSignature) {
		t.Fatalf("a row re-attributed to another owner verifies: %v", err)
	}
	// Nobody signs another's row.
	k2, _ := newKey(t)
	if err := r.Sign(k2); err == nil {
		t.Fatal("signed someone else's row")
	}
}

func TestProbeFramesAndBadInput(t *testing.T) {
	var buf bytes.Buffer
	for _, m := range []*Message{{Type: MsgProbe, Seq: 1}, {Type: MsgAnswer, Seq: 1 << 40}} {
		b, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	r := bufio.NewReader(&buf)
	for _, want := range []uint64{1, 1 << 40} {
		m, err := ReadMessage(r)
		if err != nil || m.Seq != want {
			t.Fatalf("got %+v, %v; want seq %d", m, err, want)
		}
	}
	bad := map[string][]byte{
		"unknown type":      {9, 1, 0},
		"huge length":       {1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"short body":        {1, 5, 1},
		"trailing bytes":    {1, 2, 1, 1},
		"row without owner": {3, 1, 0},
	}
	for name, b := range bad {
		if _, err := ReadMessage(bufio.NewReader(bytes.NewReader(b))); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := (&Message{Type: 7}).Encode(); err == nil {
		t.Error("encoded an unknown type")
	}
}

func FuzzReadMessage(f *testing.F) {
	r, _ := sampleRow(f)
	for _, m := range []*Message{{Type: MsgProbe, Seq: 3}, {Type: MsgAnswer, Seq: 300}, {Type: MsgRow, Row: r}} {
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{3, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadMessage(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		// What decodes encodes again and decodes to the same message.
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
		}
		m2, err := ReadMessage(bufio.NewReader(bytes.NewReader(enc)))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if m.Type != m2.Type || m.Seq != m2.Seq {
			t.Fatalf("round trip changed %+v to %+v", m, m2)
		}
		if m.Row != nil {
			_ = m.Row.Verify() // must not panic
			if len(m.Row.Entries) != len(m2.Row.Entries) || m.Row.Owner != m2.Row.Owner {
				t.Fatalf("row changed in the round trip")
			}
		}
	})
}

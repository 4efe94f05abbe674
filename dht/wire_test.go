package dht

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

func testPeer(t testing.TB) chord.Peer {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return PeerOf(id)
}

func sampleWire(t testing.TB) []*wireMsg {
	a, b, c := testPeer(t), testPeer(t), testPeer(t)
	priv, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	rec, err := record.New(record.KindValue, []byte("k"), []byte("v"), 7, time.Now().Add(time.Hour), priv)
	if err != nil {
		t.Fatal(err)
	}
	return []*wireMsg{
		{Op: uint8(chord.MsgPing), Chord: chord.Message{Type: chord.MsgPing, Seq: 3, From: a}},
		{Op: uint8(chord.MsgState), Chord: chord.Message{Type: chord.MsgState, Seq: 9, From: a, Pred: b, Nodes: []chord.Peer{b, c}}},
		{Op: uint8(chord.MsgFound), Chord: chord.Message{Type: chord.MsgFound, Seq: 1, From: c, Target: a.ID, Done: true, Nodes: []chord.Peer{a}}},
		{Op: opStore, Records: []*record.Record{rec}},
		{Op: opAck, Count: 1, Err: "x"},
		{Op: opFetch, Kind: record.KindValue, Key: []byte("k")},
		{Op: opHave, Digests: []digest{{StoreKey: rec.StoreKey(), Seq: 7}}},
		{Op: opWant, Indices: []uint64{0, 5}},
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, w := range sampleWire(t) {
		raw := w.marshal()
		got, err := unmarshalWire(raw)
		if err != nil {
			t.Fatalf("op %d: %v", w.Op, err)
		}
		if !bytes.Equal(got.marshal(), raw) {
			t.Fatalf("op %d: re-encoding differs", w.Op)
		}
		if w.Op <= 8 && (got.Chord.From != w.Chord.From || len(got.Chord.Nodes) != len(w.Chord.Nodes) || got.Chord.Done != w.Chord.Done) {
			t.Fatalf("op %d: decoded %+v, sent %+v", w.Op, got.Chord, w.Chord)
		}
	}
}

func TestWireRefusesLiesAndJunk(t *testing.T) {
	a := testPeer(t)
	m := &wireMsg{Op: uint8(chord.MsgPing), Chord: chord.Message{Type: chord.MsgPing, Seq: 1, From: a}}
	raw := m.marshal()
	// The sender's Chord ID follows its peer ID; flip one bit of it.
	lie := bytes.Clone(raw)
	idEnd := 1 + 1 + 1 + len([]byte(mustDecode(t, a.Name)))
	lie[idEnd] ^= 1
	if _, err := unmarshalWire(lie); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a Chord ID that is not SHA-1 of the peer ID: err %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":    {},
		"unknown":  {99},
		"trailing": append(bytes.Clone(raw), 0),
		"short":    raw[:len(raw)-3],
		"no done":  raw[:len(raw)-1],
	} {
		if _, err := unmarshalWire(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func mustDecode(t testing.TB, s string) peer.ID {
	id, err := peer.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func FuzzUnmarshalWire(f *testing.F) {
	for _, w := range sampleWire(f) {
		f.Add(w.marshal())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := unmarshalWire(b)
		if err != nil {
			return
		}
		again, err := unmarshalWire(w.marshal())
		if err != nil {
			t.Fatalf("re-decoding a decoded message: %v", err)
		}
		if !bytes.Equal(again.marshal(), w.marshal()) {
			t.Fatal("encoding is not stable")
		}
	})
}

// readGrowing takes exactly n bytes, whatever capacity its buffer grew
// to: frames above frameChunk once read past their end (append rounds
// capacity up), so a batch of records followed by the end of the stream
// failed with "unexpected EOF".
func TestReadGrowingStopsAtTheFrame(t *testing.T) {
	for _, n := range []int{1, frameChunk - 1, frameChunk, frameChunk + 1, 3*frameChunk + 7, 300 << 10} {
		data := make([]byte, n+5)
		for i := range data {
			data[i] = byte(i)
		}
		r := bytes.NewReader(data)
		got, err := readGrowing(r, n)
		if err != nil || len(got) != n || !bytes.Equal(got, data[:n]) {
			t.Fatalf("n=%d: read %d bytes, %v", n, len(got), err)
		}
		if r.Len() != 5 {
			t.Fatalf("n=%d: %d bytes left after the frame, want 5", n, r.Len())
		}
		// A frame that ends the stream reads whole.
		if _, err := readGrowing(bytes.NewReader(data[:n]), n); err != nil {
			t.Fatalf("n=%d at the end of the stream: %v", n, err)
		}
	}
}

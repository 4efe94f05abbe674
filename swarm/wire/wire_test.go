package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// sameMessage compares two messages field by field; nil and empty slices
// are treated alike.
func sameMessage(a, b *Message) bool {
	if a.KeepAlive != b.KeepAlive || a.ID != b.ID || a.Index != b.Index ||
		a.Begin != b.Begin || a.Length != b.Length ||
		!bytes.Equal(a.Bitfield, b.Bitfield) || !bytes.Equal(a.Block, b.Block) ||
		len(a.Peers) != len(b.Peers) {
		return false
	}
	for i := range a.Peers {
		if !bytes.Equal(a.Peers[i], b.Peers[i]) {
			return false
		}
	}
	return true
}

func fill(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// allMessages has at least one message of every type, at the edges of
// what is allowed.
func allMessages() []*Message {
	peers := make([][]byte, maxPEXPeers)
	for i := range peers {
		peers[i] = fill(i*20, byte(i))
	}
	peers[7] = fill(maxPEXRecord, 9)
	peers[8] = []byte{}
	return []*Message{
		{KeepAlive: true},
		{ID: Choke},
		{ID: Unchoke},
		{ID: Interested},
		{ID: NotInterested},
		{ID: Have, Index: 0xdeadbeef},
		{ID: Bitfield, Bitfield: []byte{0xff, 0x80}},
		{ID: Bitfield, Bitfield: []byte{}},
		{ID: Bitfield, Bitfield: fill(defaultMaxBitfield, 3)},
		{ID: Request, Index: 1, Begin: 2 * BlockSize, Length: BlockSize},
		{ID: Request, Index: 0xffffffff, Begin: 0xffffffff, Length: 1},
		{ID: Piece, Index: 5, Begin: BlockSize, Block: fill(BlockSize, 1)},
		{ID: Piece, Index: 5, Begin: 3, Block: []byte{42}},
		{ID: Cancel, Index: 9, Begin: 0, Length: 100},
		{ID: HaveAll},
		{ID: HaveNone},
		{ID: Reject, Index: 3, Begin: 4, Length: BlockSize},
		{ID: MetaRequest, Index: 2},
		{ID: MetaData, Index: 2, Length: 40000, Block: fill(metaPieceSize, 5)},
		{ID: MetaData, Index: 0, Length: 0, Block: []byte{}},
		{ID: MetaReject, Index: 7},
		{ID: PEX, Peers: [][]byte{[]byte("peer-a"), {}, fill(300, 2)}},
		{ID: PEX, Peers: nil},
		{ID: PEX, Peers: peers},
	}
}

func TestHandshake(t *testing.T) {
	ih := [20]byte{1, 2, 3, 19: 20}
	var buf bytes.Buffer
	if err := WriteHandshake(&buf, ih); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 32 || !strings.HasPrefix(buf.String(), "PSW1") {
		t.Fatalf("handshake = %q", buf.Bytes())
	}
	buf.WriteString("rest")
	got, err := ReadHandshake(&buf)
	if err != nil || got != ih {
		t.Fatalf("ReadHandshake = %x, %v", got, err)
	}
	if buf.String() != "rest" {
		t.Fatalf("ReadHandshake read past the handshake, left %q", buf.String())
	}

	bad := make([]byte, 32)
	copy(bad, "BTX1")
	if _, err := ReadHandshake(bytes.NewReader(bad)); !errors.Is(err, ErrBadHandshake) {
		t.Errorf("bad magic: err = %v", err)
	}
	for _, n := range []int{0, 3, 31} {
		hs := make([]byte, 32)
		copy(hs, "PSW1")
		if _, err := ReadHandshake(bytes.NewReader(hs[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("short handshake of %d bytes: err = %v", n, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := allMessages()
	for _, m := range msgs {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatalf("WriteMessage(%v): %v", m.ID, err)
		}
		if enc := m.Append(nil); !bytes.Equal(enc, buf.Bytes()) {
			t.Fatalf("%v: Append and WriteMessage differ", m.ID)
		}
		got, err := NewReader(&buf, 0).ReadMessage()
		if err != nil {
			t.Fatalf("ReadMessage(%v): %v", m.ID, err)
		}
		if !sameMessage(got, m) {
			t.Fatalf("round trip of %v: got %+v", m.ID, got)
		}
		if buf.Len() != 0 {
			t.Fatalf("%v: %d bytes left over", m.ID, buf.Len())
		}
	}

	// The same, all through one Reader.
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 0)
	for _, m := range msgs {
		got, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("ReadMessage(%v): %v", m.ID, err)
		}
		if !sameMessage(got, m) {
			t.Fatalf("round trip of %v: got %+v", m.ID, got)
		}
	}
	if m, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("at end: %v, %v; want io.EOF", m, err)
	}
}

func TestKeepAliveEncoding(t *testing.T) {
	if got := (&Message{KeepAlive: true, ID: Piece, Block: []byte{1}}).Append(nil); !bytes.Equal(got, []byte{0, 0, 0, 0}) {
		t.Fatalf("keepalive = %x", got)
	}
	if got := (&Message{ID: Have, Index: 0x01020304}).Append([]byte{9}); !bytes.Equal(got, []byte{9, 0, 0, 0, 5, 4, 1, 2, 3, 4}) {
		t.Fatalf("have = %x", got)
	}
}

// randomMessage returns a valid message of a random type.
func randomMessage(rng *rand.Rand) *Message {
	ids := []ID{Choke, Unchoke, Interested, NotInterested, Have, Bitfield, Request, Piece, Cancel,
		HaveAll, HaveNone, Reject, MetaRequest, MetaData, MetaReject, PEX}
	if rng.IntN(20) == 0 {
		return &Message{KeepAlive: true}
	}
	bytesOf := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	m := &Message{ID: ids[rng.IntN(len(ids))]}
	switch m.ID {
	case Have, MetaRequest, MetaReject:
		m.Index = rng.Uint32()
	case Request, Cancel, Reject:
		m.Index, m.Begin, m.Length = rng.Uint32(), rng.Uint32(), 1+rng.Uint32N(BlockSize)
	case Piece:
		m.Index, m.Begin, m.Block = rng.Uint32(), rng.Uint32(), bytesOf(1+rng.IntN(BlockSize))
	case MetaData:
		m.Index, m.Length, m.Block = rng.Uint32(), rng.Uint32(), bytesOf(rng.IntN(metaPieceSize+1))
	case Bitfield:
		m.Bitfield = bytesOf(rng.IntN(300))
	case PEX:
		for range rng.IntN(maxPEXPeers + 1) {
			m.Peers = append(m.Peers, bytesOf(rng.IntN(80)))
		}
	}
	return m
}

// TestManyMessages sends a long random sequence through one Reader and
// checks that clones taken along the way survive the reuse of its buffer.
func TestManyMessages(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var sent []*Message
	var buf bytes.Buffer
	for range 2000 {
		m := randomMessage(rng)
		sent = append(sent, m)
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 300)
	var clones []*Message
	aliased := false
	var prev *Message
	var prevBlock []byte
	for i, want := range sent {
		got, err := r.ReadMessage()
		if err != nil {
			t.Fatalf("message %d (%v): %v", i, want.ID, err)
		}
		if !sameMessage(got, want) {
			t.Fatalf("message %d (%v) differs", i, want.ID)
		}
		// Uncloned data may be overwritten by later reads: check that
		// this happens at least once, so the clone check below means
		// something.
		if prev != nil && !bytes.Equal(prevBlock, prev.Block) {
			aliased = true
		}
		prev, prevBlock = got, bytes.Clone(got.Block)
		clones = append(clones, got.Clone())
	}
	if !aliased {
		t.Log("note: no buffer reuse observed")
	}
	for i := range sent {
		if !sameMessage(clones[i], sent[i]) {
			t.Fatalf("clone of message %d (%v) was corrupted", i, sent[i].ID)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
}

func TestClone(t *testing.T) {
	m := &Message{ID: PEX, Peers: [][]byte{{1, 2}, {3}}, Block: []byte{4}, Bitfield: []byte{5}}
	c := m.Clone()
	m.Peers[0][0], m.Block[0], m.Bitfield[0] = 0, 0, 0
	if c.Peers[0][0] != 1 || c.Block[0] != 4 || c.Bitfield[0] != 5 {
		t.Fatalf("clone shares memory: %+v", c)
	}
	if c := (&Message{ID: Choke}).Clone(); c.Block != nil || c.Peers != nil || c.Bitfield != nil {
		t.Fatalf("clone of empty message: %+v", c)
	}
}

func TestIDString(t *testing.T) {
	for id, want := range map[ID]string{Choke: "Choke", NotInterested: "NotInterested", Reject: "Reject",
		MetaData: "MetaData", PEX: "PEX", 9: "ID(0x09)", 0xff: "ID(0xff)"} {
		if got := id.String(); got != want {
			t.Errorf("ID(%d).String() = %q, want %q", uint8(id), got, want)
		}
	}
}

// frame builds a raw frame with a correct length prefix.
func frame(id ID, payload ...[]byte) []byte {
	body := []byte{byte(id)}
	for _, p := range payload {
		body = append(body, p...)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func u32(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, x)
	}
	return b
}

func u16(v ...uint16) []byte {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint16(b, x)
	}
	return b
}

func TestRefusals(t *testing.T) {
	tests := []struct {
		name        string
		data        []byte
		maxBitfield int
		want        error
	}{
		{"piece block too large", frame(Piece, u32(0, 0), make([]byte, BlockSize+1)), 0, ErrTooLarge},
		{"piece empty block", frame(Piece, u32(0, 0)), 0, ErrBadLength},
		{"piece short header", frame(Piece, u32(0), []byte{1, 2, 3}), 0, ErrBadLength},
		{"piece huge length prefix", []byte{0xff, 0xff, 0xff, 0xff, byte(Piece)}, 0, ErrTooLarge},
		{"request too long", frame(Request, u32(0, 0, BlockSize+1)), 0, ErrTooLarge},
		{"cancel too long", frame(Cancel, u32(0, 0, 1<<31)), 0, ErrTooLarge},
		{"reject too long", frame(Reject, u32(0, 0, BlockSize*2)), 0, ErrTooLarge},
		{"request zero length", frame(Request, u32(1, 2, 0)), 0, ErrBadLength},
		{"cancel zero length", frame(Cancel, u32(1, 2, 0)), 0, ErrBadLength},
		{"reject zero length", frame(Reject, u32(1, 2, 0)), 0, ErrBadLength},
		{"unknown id 9", frame(9), 0, ErrUnknownID},
		{"unknown id 0x11", frame(0x11, u32(1)), 0, ErrUnknownID},
		{"unknown id 0xff huge", []byte{0xff, 0xff, 0xff, 0xff, 0xff}, 0, ErrUnknownID},
		{"bitfield over maxBitfield", frame(Bitfield, make([]byte, 11)), 10, ErrTooLarge},
		{"bitfield over default", frame(Bitfield, make([]byte, defaultMaxBitfield+1)), 0, ErrTooLarge},
		{"metadata block too large", frame(MetaData, u32(0, 1<<20), make([]byte, metaPieceSize+1)), 0, ErrTooLarge},
		{"metadata short", frame(MetaData, u32(0)), 0, ErrBadLength},
		{"pex too many peers", frame(PEX, u16(maxPEXPeers+1), bytes.Repeat(u16(0), maxPEXPeers+1)), 0, ErrTooLarge},
		{"pex record too large", frame(PEX, u16(1, maxPEXRecord+1), make([]byte, maxPEXRecord+1)), 0, ErrTooLarge},
		{"pex payload too large", frame(PEX, u16(1), make([]byte, maxPEXPayload)), 0, ErrTooLarge},
		{"pex trailing bytes", frame(PEX, u16(1, 2), []byte{1, 2, 3}), 0, ErrBadLength},
		{"pex list truncated", frame(PEX, u16(2, 2), []byte{1, 2}), 0, ErrBadLength},
		{"pex record truncated", frame(PEX, u16(1, 5), []byte{1, 2}), 0, ErrBadLength},
		{"pex no count", frame(PEX, []byte{1}), 0, ErrBadLength},
	}
	// Wrong payload length for every fixed-size type.
	fixed := map[ID]int{Choke: 0, Unchoke: 0, Interested: 0, NotInterested: 0, HaveAll: 0, HaveNone: 0,
		Have: 4, MetaRequest: 4, MetaReject: 4, Request: 12, Cancel: 12, Reject: 12}
	for id, n := range fixed {
		for _, d := range []int{-1, 1, 1000} {
			if n+d < 0 {
				continue
			}
			tests = append(tests, struct {
				name        string
				data        []byte
				maxBitfield int
				want        error
			}{id.String() + " wrong length", frame(id, bytes.Repeat([]byte{1}, n+d)), 0, ErrBadLength})
		}
	}
	for _, tt := range tests {
		m, err := NewReader(bytes.NewReader(tt.data), tt.maxBitfield).ReadMessage()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %+v, %v; want %v", tt.name, m, err, tt.want)
		} else if m != nil {
			t.Errorf("%s: message returned with error", tt.name)
		}
	}
}

func TestTruncated(t *testing.T) {
	for _, m := range allMessages() {
		enc := m.Append(nil)
		for _, n := range []int{1, 3, 4, 5, len(enc) / 2, len(enc) - 1} {
			if n <= 0 || n >= len(enc) {
				continue
			}
			_, err := NewReader(bytes.NewReader(enc[:n]), 0).ReadMessage()
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%v cut to %d of %d bytes: err = %v", m.ID, n, len(enc), err)
			}
		}
	}
	if _, err := NewReader(bytes.NewReader(nil), 0).ReadMessage(); err != io.EOF {
		t.Errorf("empty stream: err = %v, want io.EOF", err)
	}
}

func TestSetMaxBitfield(t *testing.T) {
	var buf bytes.Buffer
	for range 3 {
		WriteMessage(&buf, &Message{ID: Bitfield, Bitfield: make([]byte, 100)})
	}
	r := NewReader(&buf, 0)
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	r.SetMaxBitfield(100)
	if _, err := r.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	r.SetMaxBitfield(99)
	if _, err := r.ReadMessage(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestWriteMessageRefuses(t *testing.T) {
	tests := []struct {
		m    *Message
		want error
	}{
		{&Message{ID: 9}, ErrUnknownID},
		{&Message{ID: Request, Length: 0}, ErrBadLength},
		{&Message{ID: Cancel, Length: BlockSize + 1}, ErrTooLarge},
		{&Message{ID: Reject, Length: BlockSize + 1}, ErrTooLarge},
		{&Message{ID: Piece, Block: make([]byte, BlockSize+1)}, ErrTooLarge},
		{&Message{ID: Piece}, ErrBadLength},
		{&Message{ID: MetaData, Block: make([]byte, metaPieceSize+1)}, ErrTooLarge},
		{&Message{ID: PEX, Peers: make([][]byte, maxPEXPeers+1)}, ErrTooLarge},
		{&Message{ID: PEX, Peers: [][]byte{make([]byte, maxPEXRecord+1)}}, ErrTooLarge},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		if err := WriteMessage(&buf, tt.m); !errors.Is(err, tt.want) {
			t.Errorf("WriteMessage(%v): err = %v, want %v", tt.m.ID, err, tt.want)
		}
		if buf.Len() != 0 {
			t.Errorf("WriteMessage(%v) wrote %d bytes of a refused message", tt.m.ID, buf.Len())
		}
	}
}

func TestBits(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 1000} {
		b := NewBits(n)
		if len(b) != (n+7)/8 {
			t.Fatalf("n=%d: len %d", n, len(b))
		}
		for _, i := range []int{-1, -8, 8 * len(b), 1 << 40} {
			b.Set(i) // no-op, no panic
			b.Clear(i)
			if b.Has(i) {
				t.Fatalf("n=%d: Has(%d) out of range", n, i)
			}
		}
		if b.Count() != 0 {
			t.Fatalf("n=%d: Count of new Bits = %d", n, b.Count())
		}
		edges := []int{0, n - 1, n / 2}
		for _, i := range edges {
			b.Set(i)
			if !b.Has(i) {
				t.Fatalf("n=%d: Set(%d) not Has", n, i)
			}
		}
		distinct := map[int]bool{}
		for _, i := range edges {
			distinct[i] = true
		}
		if b.Count() != len(distinct) {
			t.Fatalf("n=%d: Count = %d, want %d", n, b.Count(), len(distinct))
		}
		if b[0]&0x80 == 0 {
			t.Fatalf("n=%d: piece 0 is not the high bit of byte 0: %08b", n, b[0])
		}
		for i := range n {
			b.Set(i)
		}
		if b.Count() != n {
			t.Fatalf("n=%d: all set, Count = %d", n, b.Count())
		}
		if err := CheckBits(b, n); err != nil {
			t.Fatalf("n=%d: CheckBits of full bitfield: %v", n, err)
		}
		for _, i := range edges {
			b.Clear(i)
			if b.Has(i) {
				t.Fatalf("n=%d: Clear(%d) still Has", n, i)
			}
		}
		if b.Count() != n-len(distinct) {
			t.Fatalf("n=%d: Count after Clear = %d", n, b.Count())
		}
		for i := range n {
			if b.Has(i) == distinct[i] {
				t.Fatalf("n=%d: bit %d wrong after Clear", n, i)
			}
		}
	}
	// Bit order within a byte.
	b := NewBits(16)
	b.Set(9)
	if b[0] != 0 || b[1] != 0x40 {
		t.Fatalf("Set(9) = %08b", []byte(b))
	}
}

func TestCheckBits(t *testing.T) {
	tests := []struct {
		b    []byte
		n    int
		ok   bool
		name string
	}{
		{nil, 0, true, "empty"},
		{[]byte{0x80}, 1, true, "one piece"},
		{[]byte{0xc0}, 1, false, "spare bit after 1"},
		{[]byte{0xfe}, 7, true, "seven pieces"},
		{[]byte{0xff}, 7, false, "spare bit after 7"},
		{[]byte{0xff}, 8, true, "eight pieces"},
		{[]byte{0xff, 0x80}, 9, true, "nine pieces"},
		{[]byte{0xff, 0x81}, 9, false, "last spare bit"},
		{[]byte{0xff}, 9, false, "too short"},
		{[]byte{0xff, 0, 0}, 9, false, "too long"},
		{[]byte{}, -1, false, "negative"},
	}
	for _, tt := range tests {
		err := CheckBits(tt.b, tt.n)
		if tt.ok != (err == nil) {
			t.Errorf("%s: CheckBits(%08b, %d) = %v", tt.name, tt.b, tt.n, err)
		}
		if err != nil && !errors.Is(err, ErrBadBitfield) {
			t.Errorf("%s: error %v does not wrap ErrBadBitfield", tt.name, err)
		}
	}
}

func FuzzReadMessage(f *testing.F) {
	var all []byte
	for _, m := range allMessages() {
		enc := m.Append(nil)
		if len(enc) < 4096 {
			f.Add(enc, uint16(0))
		}
		all = append(all, enc...)
	}
	f.Add(all[:2000], uint16(2))
	f.Add(frame(PEX, u16(2, 1), []byte{7}, u16(0)), uint16(0))
	f.Add(frame(Bitfield, []byte{1, 2, 3}), uint16(3))
	f.Fuzz(func(t *testing.T, data []byte, maxBitfield uint16) {
		r := NewReader(bytes.NewReader(data), int(maxBitfield))
		var enc []byte
		for {
			m, err := r.ReadMessage()
			if err != nil {
				if err == io.EOF && len(enc) != len(data) {
					t.Fatalf("io.EOF after %d of %d bytes", len(enc), len(data))
				}
				return
			}
			enc = m.Append(enc)
			if len(enc) > len(data) || !bytes.Equal(enc, data[:len(enc)]) {
				t.Fatalf("%v re-encodes differently from the bytes read", m.ID)
			}
			// What the reader accepts, the writer must accept too.
			if err := WriteMessage(io.Discard, m); err != nil {
				t.Fatalf("accepted %v refused by WriteMessage: %v", m.ID, err)
			}
			if !sameMessage(m.Clone(), m) {
				t.Fatalf("clone of %v differs", m.ID)
			}
		}
	})
}

func FuzzReadHandshake(f *testing.F) {
	var good bytes.Buffer
	WriteHandshake(&good, [20]byte{1, 2, 3})
	f.Add(good.Bytes())
	f.Add([]byte("PSW1"))
	f.Add([]byte("PSW2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ih, err := ReadHandshake(bytes.NewReader(data))
		valid := len(data) >= 32 && string(data[:4]) == "PSW1"
		if valid != (err == nil) {
			t.Fatalf("ReadHandshake(%q) = %v", data, err)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(ih[:], data[4:24]) {
			t.Fatalf("infohash %x, want %x", ih, data[4:24])
		}
		var buf bytes.Buffer
		WriteHandshake(&buf, ih)
		if got, err := ReadHandshake(&buf); err != nil || got != ih {
			t.Fatalf("round trip: %x, %v", got, err)
		}
	})
}

func BenchmarkWriteReadPiece(b *testing.B) {
	msg := &Message{ID: Piece, Index: 1, Begin: 0, Block: fill(BlockSize, 1)}

	b.Run("buffer", func(b *testing.B) {
		var buf bytes.Buffer
		r := NewReader(&buf, 0)
		b.SetBytes(BlockSize)
		b.ReportAllocs()
		for b.Loop() {
			if err := WriteMessage(&buf, msg); err != nil {
				b.Fatal(err)
			}
			if _, err := r.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("pipe", func(b *testing.B) {
		pr, pw := io.Pipe()
		r := NewReader(pr, 0)
		b.SetBytes(BlockSize)
		b.ReportAllocs()
		done := make(chan error, 1)
		n := b.N
		go func() {
			for range n {
				if err := WriteMessage(pw, msg); err != nil {
					done <- err
					return
				}
			}
			done <- pw.Close()
		}()
		b.ResetTimer()
		for range n {
			if _, err := r.ReadMessage(); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

// ReaderMemory covers what a Reader holds after the largest frame of every
// kind it accepts, and no more.
func TestReaderMemory(t *testing.T) {
	peers := make([][]byte, maxPEXPeers)
	for i := range peers {
		peers[i] = make([]byte, maxPEXRecord)
	}
	for _, maxBits := range []int{0, 32, 200 << 10} {
		r := Reader{maxBitfield: maxBits}
		var buf bytes.Buffer
		for _, m := range []*Message{
			{ID: Piece, Block: make([]byte, BlockSize)},
			{ID: MetaData, Block: make([]byte, metaPieceSize)},
			{ID: PEX, Peers: peers},
			{ID: Bitfield, Bitfield: make([]byte, r.bitfieldLimit())},
		} {
			if err := WriteMessage(&buf, m); err != nil {
				t.Fatal(err)
			}
		}
		rd := NewReader(&buf, maxBits)
		for range 4 {
			if _, err := rd.ReadMessage(); err != nil {
				t.Fatalf("maxBitfield %d: %v", maxBits, err)
			}
		}
		held := rd.br.Size() + cap(rd.buf)
		if got := ReaderMemory(maxBits); got != held {
			t.Errorf("ReaderMemory(%d) = %d; the Reader holds %d", maxBits, got, held)
		}
	}
}

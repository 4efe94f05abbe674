package dht

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/record"
)

// Protocol is the stream protocol for Chord RPCs and record transfers.
const Protocol = "/peer/chord/1.0.0"

// Operations beyond the core's message types (which use 1-8).
const (
	opStore   = 20 // Records → Ack: store these (replication, put, hand-over)
	opAck     = 21 // Count stored, Err
	opFetch   = 22 // Kind, Key → Records
	opRecords = 23 // Records
	opHave    = 24 // Digests → Want: which of these do you lack?
	opWant    = 25 // Indices into the Have list
)

// Bounds on what a peer may send us.
const (
	maxFrame    = 4 << 20 // one frame: a batch of records at most
	maxNodes    = 64      // peers in one Chord message
	maxBatch    = 256     // records in one Store or Records frame
	maxDigests  = 4096    // entries in one Have
	maxPeerID   = 128     // bytes of a peer ID
	maxErrorLen = 1024
)

// ErrMalformed marks a frame that does not decode.
var ErrMalformed = errors.New("dht: malformed message")

// wireMsg is one frame on a chord stream: a core message, or a record
// operation.
type wireMsg struct {
	Op      uint8
	Chord   chord.Message    // Op 1-8
	Records []*record.Record // opStore, opRecords
	Count   uint64           // opAck
	Err     string           // opAck
	Kind    record.Kind      // opFetch
	Key     []byte           // opFetch
	Digests []digest         // opHave
	Indices []uint64         // opWant
}

type digest struct {
	StoreKey []byte
	Seq      uint64
}

func (w *wireMsg) marshal() []byte {
	b := []byte{w.Op}
	switch {
	case w.Op >= 1 && w.Op <= 8:
		m := &w.Chord
		b = binary.AppendUvarint(b, m.Seq)
		b = appendPeer(b, m.From)
		b = append(b, m.Target[:]...)
		b = appendPeer(b, m.Pred)
		b = binary.AppendUvarint(b, uint64(len(m.Nodes)))
		for _, p := range m.Nodes {
			b = appendPeer(b, p)
		}
		if m.Done {
			b = append(b, 1)
		} else {
			b = append(b, 0)
		}
	case w.Op == opStore || w.Op == opRecords:
		b = binary.AppendUvarint(b, uint64(len(w.Records)))
		for _, r := range w.Records {
			b = appendBytes(b, r.Marshal())
		}
	case w.Op == opAck:
		b = binary.AppendUvarint(b, w.Count)
		b = appendBytes(b, []byte(w.Err))
	case w.Op == opFetch:
		b = append(b, byte(w.Kind))
		b = appendBytes(b, w.Key)
	case w.Op == opHave:
		b = binary.AppendUvarint(b, uint64(len(w.Digests)))
		for _, d := range w.Digests {
			b = appendBytes(b, d.StoreKey)
			b = binary.AppendUvarint(b, d.Seq)
		}
	case w.Op == opWant:
		b = binary.AppendUvarint(b, uint64(len(w.Indices)))
		for _, i := range w.Indices {
			b = binary.AppendUvarint(b, i)
		}
	}
	return b
}

// appendPeer writes a peer as its peer ID bytes and its Chord ID; the zero
// peer is an empty ID.
func appendPeer(b []byte, p chord.Peer) []byte {
	if p.IsZero() {
		return binary.AppendUvarint(b, 0)
	}
	id, err := peer.Decode(p.Name)
	if err != nil {
		return binary.AppendUvarint(b, 0)
	}
	b = appendBytes(b, []byte(id))
	return append(b, p.ID[:]...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(what string, max int) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(max) || n > uint64(len(r.b)) {
		r.fail(what + " too long")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) fixed(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// peer reads a peer and checks that its Chord ID is SHA-1 of its peer ID:
// a peer that lies about where it sits on the ring is refused.
func (r *reader) peer(what string) chord.Peer {
	raw := r.bytes(what, maxPeerID)
	if r.err != nil || len(raw) == 0 {
		return chord.Peer{}
	}
	id, err := peer.IDFromBytes(raw)
	if err != nil {
		r.fail(what + ": bad peer ID")
		return chord.Peer{}
	}
	var cid chord.ID
	copy(cid[:], r.fixed(chord.IDBytes, what))
	if r.err != nil {
		return chord.Peer{}
	}
	if cid != chord.HashID(raw) {
		r.fail(what + ": chord ID is not SHA-1 of the peer ID")
		return chord.Peer{}
	}
	return chord.Peer{ID: cid, Name: id.String()}
}

func unmarshalWire(b []byte) (*wireMsg, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	w := &wireMsg{Op: b[0]}
	r := &reader{b: b[1:]}
	switch {
	case w.Op >= 1 && w.Op <= 8:
		m := &w.Chord
		m.Type = chord.MsgType(w.Op)
		m.Seq = r.uvarint("seq")
		m.From = r.peer("from")
		copy(m.Target[:], r.fixed(chord.IDBytes, "target"))
		m.Pred = r.peer("pred")
		n := r.uvarint("node count")
		if n > maxNodes {
			r.fail("too many nodes")
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			p := r.peer("node")
			if p.IsZero() && r.err == nil {
				r.fail("empty node")
			}
			m.Nodes = append(m.Nodes, p)
		}
		done := r.fixed(1, "done")
		if r.err == nil && done[0] > 1 {
			r.fail("done flag")
		}
		m.Done = r.err == nil && done[0] == 1
		if r.err == nil && m.From.IsZero() {
			r.fail("no sender")
		}
	case w.Op == opStore || w.Op == opRecords:
		n := r.uvarint("record count")
		if n > maxBatch {
			r.fail("too many records")
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			raw := r.bytes("record", record.MaxEncoded)
			if r.err != nil {
				break
			}
			rec, err := record.Unmarshal(raw)
			if err != nil {
				r.fail("record: " + err.Error())
				break
			}
			w.Records = append(w.Records, rec)
		}
	case w.Op == opAck:
		w.Count = r.uvarint("count")
		w.Err = string(r.bytes("error", maxErrorLen))
	case w.Op == opFetch:
		k := r.fixed(1, "kind")
		if r.err == nil {
			w.Kind = record.Kind(k[0])
		}
		w.Key = r.bytes("key", record.MaxKey)
	case w.Op == opHave:
		n := r.uvarint("digest count")
		if n > maxDigests {
			r.fail("too many digests")
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			d := digest{StoreKey: r.bytes("store key", 1024), Seq: r.uvarint("seq")}
			w.Digests = append(w.Digests, d)
		}
	case w.Op == opWant:
		n := r.uvarint("index count")
		if n > maxDigests {
			r.fail("too many indices")
		}
		for i := uint64(0); i < n && r.err == nil; i++ {
			w.Indices = append(w.Indices, r.uvarint("index"))
		}
	default:
		return nil, fmt.Errorf("%w: unknown operation %d", ErrMalformed, w.Op)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return w, nil
}

func writeFrame(w io.Writer, m *wireMsg) error {
	payload := m.marshal()
	buf := binary.AppendUvarint(make([]byte, 0, len(payload)+4), uint64(len(payload)))
	_, err := w.Write(append(buf, payload...))
	return err
}

// A frame's buffer starts at frameChunk bytes at most and doubles as its
// bytes arrive, so a length prefix alone reserves no memory. Frames above
// frameChunk (record batches) also draw on largeFrameBudget while they are
// read: peers cannot make us hold more than that in half-read batches,
// however many streams they open.
const (
	frameChunk       = 64 << 10
	largeFrameBudget = 16 << 20
)

// ErrBusy marks a large frame refused because largeFrameBudget is spent;
// the sender may try again later.
var ErrBusy = errors.New("dht: busy")

var largeFrames = frameBudget{left: largeFrameBudget}

// frameBudget is a count of bytes that frames may take and give back.
type frameBudget struct {
	mu   sync.Mutex
	left int64
}

func (b *frameBudget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.left {
		return false
	}
	b.left -= n
	return true
}

func (b *frameBudget) give(n int64) {
	b.mu.Lock()
	b.left += n
	b.mu.Unlock()
}

func readFrame(r *bufio.Reader) (*wireMsg, error) {
	n, err := readFrameLen(r)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, n)
}

// readFrameLen reads a frame's length prefix and refuses a frame longer
// than maxFrame: what readFrameBody will then buffer.
func readFrameLen(r *bufio.Reader) (int, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, err
	}
	if n > maxFrame {
		return 0, fmt.Errorf("%w: frame of %d bytes", ErrMalformed, n)
	}
	return int(n), nil
}

// readFrameBody reads and decodes the n bytes of a frame after its length.
func readFrameBody(r *bufio.Reader, n int) (*wireMsg, error) {
	if n > frameChunk {
		if !largeFrames.take(int64(n)) {
			return nil, fmt.Errorf("%w: a frame of %d bytes while %d bytes of large frames are being read", ErrBusy, n, largeFrameBudget)
		}
		defer largeFrames.give(int64(n))
	}
	buf, err := readGrowing(r, n)
	if err != nil {
		return nil, err
	}
	return unmarshalWire(buf)
}

// readGrowing reads exactly n bytes into a buffer that grows with what has
// arrived.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, frameChunk))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), n-len(buf)))...)[:len(buf)]
		}
		// append may have rounded the capacity up past n: read no further
		// than the frame, or the next frame's bytes (or the stream's end)
		// would be taken for this one's.
		m, err := io.ReadFull(r, buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

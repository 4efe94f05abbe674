package ron

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Protocol is the libp2p protocol of probes and link-state rows.
const Protocol = "/peer/ron/1.0.0"

// Message types on a RON stream.
const (
	MsgProbe  byte = 1 // seq: answer me
	MsgAnswer byte = 2 // seq: the answer
	MsgRow    byte = 3 // a signed row
)

// Limits of the wire format.
const (
	MaxBody    = 8 << 10 // the largest message body accepted
	MaxEntries = 256     // links in one row
	hashLen    = 8
	maxTputKiB = 1e15 / 1024       // the largest throughput appendEntry writes, in KiB/s
	rowDomain  = "peer/ron/row/1:" // signatures cover this prefix and the row
)

// Errors a decoder returns.
var (
	ErrMalformed = errors.New("ron: malformed message")
	ErrSignature = errors.New("ron: row signature does not verify")
)

// PeerHash is the short name a row gives a destination: the first 8 bytes
// of SHA-256 of its peer ID. Receivers map it back through their own member
// list; in a group of at most a few hundred, a collision is negligible, and
// a colliding entry is dropped rather than guessed.
type PeerHash [hashLen]byte

// HashPeer is p's PeerHash.
func HashPeer(p peer.ID) PeerHash {
	sum := sha256.Sum256([]byte(p))
	var h PeerHash
	copy(h[:], sum[:hashLen])
	return h
}

// Entry is one link of a signed row on the wire.
type Entry struct {
	To   PeerHash
	Link LinkState
}

// SignedRow is a member's row as it travels: owner, sequence number, links
// and the owner's signature over them.
type SignedRow struct {
	Owner   peer.ID
	Seq     uint64
	Entries []Entry
	Sig     []byte
}

// Message is one decoded message.
type Message struct {
	Type byte
	Seq  uint64     // probe and answer
	Row  *SignedRow // row
}

func appendEntry(b []byte, e Entry) []byte {
	b = append(b, e.To[:]...)
	b = binary.AppendUvarint(b, uint64(math.Round(min(e.Link.RTTms, 1e6)*1000))) // µs
	b = binary.AppendUvarint(b, uint64(math.Round(min(max(e.Link.Loss, 0), 1)*1000)))
	b = binary.AppendUvarint(b, uint64(min(max(e.Link.Tput, 0), 1e15)/1024)) // KiB/s
	var flags byte
	if e.Link.Down {
		flags |= 1
	}
	return append(b, flags)
}

// signedPart is the encoding that the signature covers.
func (r *SignedRow) signedPart() []byte {
	b := []byte(rowDomain)
	b = binary.AppendUvarint(b, uint64(len(r.Owner)))
	b = append(b, r.Owner...)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for _, e := range r.Entries {
		b = appendEntry(b, e)
	}
	return b
}

// Sign signs r with key, which must be the owner's.
func (r *SignedRow) Sign(key crypto.PrivKey) error {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	if id != r.Owner {
		return fmt.Errorf("ron: signing %s's row with %s's key", r.Owner, id)
	}
	if len(r.Entries) > MaxEntries {
		return fmt.Errorf("ron: a row of %d links, limit %d", len(r.Entries), MaxEntries)
	}
	sig, err := key.Sign(r.signedPart())
	if err != nil {
		return err
	}
	r.Sig = sig
	return nil
}

// Verify checks that r is signed by its owner's key, which the owner's
// peer ID carries.
func (r *SignedRow) Verify() error {
	pub, err := r.Owner.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: owner %s: %v", ErrSignature, r.Owner, err)
	}
	ok, err := pub.Verify(r.signedPart(), r.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w (owner %s)", ErrSignature, r.Owner)
	}
	return nil
}

// Encode writes m as one frame: type, body length, body.
func (m *Message) Encode() ([]byte, error) {
	var body []byte
	switch m.Type {
	case MsgProbe, MsgAnswer:
		body = binary.AppendUvarint(nil, m.Seq)
	case MsgRow:
		if m.Row == nil {
			return nil, fmt.Errorf("ron: a row message without a row")
		}
		body = m.Row.signedPart()[len(rowDomain):]
		body = binary.AppendUvarint(body, uint64(len(m.Row.Sig)))
		body = append(body, m.Row.Sig...)
	default:
		return nil, fmt.Errorf("ron: unknown message type %d", m.Type)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("ron: a %d-byte message, limit %d", len(body), MaxBody)
	}
	out := []byte{m.Type}
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...), nil
}

// ReadMessage reads one frame. A row's signature is not checked here: the
// caller calls Verify.
func ReadMessage(r *bufio.Reader) (*Message, error) {
	t, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %v", ErrMalformed, err)
	}
	if n > MaxBody {
		return nil, fmt.Errorf("%w: a %d-byte body, limit %d", ErrMalformed, n, MaxBody)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrMalformed, err)
	}
	return DecodeBody(t, body)
}

// DecodeBody decodes the body of a message of type t.
func DecodeBody(t byte, body []byte) (*Message, error) {
	d := decoder{b: body}
	m := &Message{Type: t}
	switch t {
	case MsgProbe, MsgAnswer:
		m.Seq = d.uvarint()
	case MsgRow:
		row := &SignedRow{}
		idLen := d.uvarint()
		if idLen == 0 || idLen > 128 {
			return nil, fmt.Errorf("%w: owner of %d bytes", ErrMalformed, idLen)
		}
		id, err := peer.IDFromBytes(d.bytes(int(idLen)))
		if d.err == nil && err != nil {
			return nil, fmt.Errorf("%w: owner: %v", ErrMalformed, err)
		}
		row.Owner = id
		row.Seq = d.uvarint()
		n := d.uvarint()
		if n > MaxEntries {
			return nil, fmt.Errorf("%w: %d links, limit %d", ErrMalformed, n, MaxEntries)
		}
		for range n {
			var e Entry
			copy(e.To[:], d.bytes(hashLen))
			rtt, loss, tput := d.uvarint(), d.uvarint(), d.uvarint()
			flags := d.byte()
			// The bounds appendEntry clamps to: a value beyond them would
			// decode to a link that encodes (and is verified) differently.
			if loss > 1000 || flags > 1 || rtt > 1e9 || tput > maxTputKiB {
				return nil, fmt.Errorf("%w: link values out of range", ErrMalformed)
			}
			e.Link = LinkState{RTTms: float64(rtt) / 1000, Loss: float64(loss) / 1000, Tput: float64(tput) * 1024, Down: flags&1 != 0}
			row.Entries = append(row.Entries, e)
		}
		sigLen := d.uvarint()
		if sigLen > 1024 {
			return nil, fmt.Errorf("%w: a %d-byte signature", ErrMalformed, sigLen)
		}
		row.Sig = append([]byte(nil), d.bytes(int(sigLen))...)
		m.Row = row
	default:
		return nil, fmt.Errorf("%w: unknown type %d", ErrMalformed, t)
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the message", ErrMalformed, len(d.b))
	}
	return m, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("want %d bytes, have %d", n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	b := d.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

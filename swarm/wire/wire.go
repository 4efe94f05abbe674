// Package wire implements the BEP 3 peer wire protocol of the swarm as it
// is carried over libp2p streams.
//
// Each stream opened under [Protocol] carries one swarm connection. Both
// sides first send a fixed 32-byte handshake naming the torrent by its
// infohash (peer identity comes from libp2p, so it carries no peer id),
// then length-prefixed messages as in BEP 3, with the BEP 6 fast-extension
// HaveAll/HaveNone/Reject messages and three message kinds of our own:
// metadata exchange (MetaRequest/MetaData/MetaReject) and peer exchange
// (PEX).
//
// Frame layout: a 4-byte big-endian length of what follows, then a 1-byte
// message id and the payload. A zero length is a keepalive.
//
//	Have, MetaRequest, MetaReject  index(4)
//	Request, Cancel, Reject        index(4) begin(4) length(4)
//	Piece                          index(4) begin(4) block
//	Bitfield                       bitfield bytes
//	MetaData                       index(4) totalSize(4) data
//	PEX                            count(2) then count × (len(2) bytes)
//
// Every read is bounded: [Reader] refuses a frame whose size the message
// type does not allow before reading its payload, so a peer cannot make us
// buffer more than a Bitfield's worth of data.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Protocol is the libp2p protocol id of swarm streams.
const Protocol = "/peer/swarm/1.0.0"

// BlockSize is the only block size we request; Request, Cancel, Reject and
// Piece messages for more than this are refused.
const BlockSize = 16 << 10

// MaxMessage is the largest frame body (id + payload) of any message except
// Bitfield, MetaData and PEX.
const MaxMessage = BlockSize + 64

const (
	// metaPieceSize is the size of a metadata piece and the largest MetaData
	// block.
	metaPieceSize = 16 << 10
	// defaultMaxBitfield bounds a Bitfield while the piece count is unknown.
	defaultMaxBitfield = 128 << 10
	// maxPEXPeers and maxPEXRecord bound a PEX message.
	maxPEXPeers  = 50
	maxPEXRecord = 1 << 10
	// maxPEXPayload is the largest valid PEX payload.
	maxPEXPayload = 2 + maxPEXPeers*(2+maxPEXRecord)
)

// Errors returned (wrapped with context) by this package; test with
// errors.Is.
var (
	// ErrTooLarge: a frame, block, request length, bitfield or PEX list is
	// over the limit for its message type.
	ErrTooLarge = errors.New("wire: message too large")
	// ErrBadLength: a payload of the wrong length for its type, a zero
	// request length, an empty Piece block, or a malformed PEX list.
	ErrBadLength = errors.New("wire: bad message length")
	// ErrUnknownID: a message id this protocol does not define.
	ErrUnknownID = errors.New("wire: unknown message id")
	// ErrBadHandshake: the handshake did not start with the magic.
	ErrBadHandshake = errors.New("wire: bad handshake")
	// ErrBadBitfield: CheckBits found a bitfield of the wrong size or with
	// spare bits set.
	ErrBadBitfield = errors.New("wire: bad bitfield")
)

// Handshake layout.
const (
	handshakeMagic = "PSW1"
	handshakeSize  = 4 + 20 + 8
)

// WriteHandshake writes the 32-byte handshake: magic "PSW1", the infohash
// and 8 reserved zero bytes.
func WriteHandshake(w io.Writer, infohash [20]byte) error {
	var b [handshakeSize]byte
	copy(b[:], handshakeMagic)
	copy(b[4:], infohash[:])
	if _, err := w.Write(b[:]); err != nil {
		return fmt.Errorf("wire: writing handshake: %w", err)
	}
	return nil
}

// ReadHandshake reads exactly one 32-byte handshake from r and returns its
// infohash. It reads nothing beyond the handshake, so r can be handed to
// [NewReader] afterwards. A short read yields an error wrapping
// io.ErrUnexpectedEOF; a wrong magic one wrapping ErrBadHandshake. The
// reserved bytes are ignored, leaving room for future feature bits.
func ReadHandshake(r io.Reader) (infohash [20]byte, err error) {
	var b [handshakeSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return infohash, fmt.Errorf("wire: reading handshake: %w", unexpected(err))
	}
	if string(b[:4]) != handshakeMagic {
		return infohash, fmt.Errorf("%w: magic %q, want %q", ErrBadHandshake, b[:4], handshakeMagic)
	}
	copy(infohash[:], b[4:24])
	return infohash, nil
}

// ID is a message id.
type ID uint8

// Message ids.
const (
	Choke         ID = 0
	Unchoke       ID = 1
	Interested    ID = 2
	NotInterested ID = 3
	Have          ID = 4
	Bitfield      ID = 5
	Request       ID = 6
	Piece         ID = 7
	Cancel        ID = 8
	HaveAll       ID = 0x0E // BEP 6
	HaveNone      ID = 0x0F // BEP 6
	Reject        ID = 0x10 // BEP 6 reject request: index, begin, length
	MetaRequest   ID = 0x20 // Index = metadata piece number (16 KiB pieces of the info dict)
	MetaData      ID = 0x21 // Index = metadata piece, Length = total metadata size, Block = data (≤ 16 KiB)
	MetaReject    ID = 0x22 // Index
	PEX           ID = 0x23 // Peers: opaque peer records (each ≤ 1 KiB, at most 50)
)

var idNames = [...]string{
	Choke:         "Choke",
	Unchoke:       "Unchoke",
	Interested:    "Interested",
	NotInterested: "NotInterested",
	Have:          "Have",
	Bitfield:      "Bitfield",
	Request:       "Request",
	Piece:         "Piece",
	Cancel:        "Cancel",
	HaveAll:       "HaveAll",
	HaveNone:      "HaveNone",
	Reject:        "Reject",
	MetaRequest:   "MetaRequest",
	MetaData:      "MetaData",
	MetaReject:    "MetaReject",
	PEX:           "PEX",
}

// String returns the id's name, or "ID(0xNN)" for an unknown id.
func (id ID) String() string {
	if int(id) < len(idNames) && idNames[id] != "" {
		return idNames[id]
	}
	return fmt.Sprintf("ID(0x%02x)", uint8(id))
}

// known reports whether id is defined by this protocol.
func (id ID) known() bool {
	return int(id) < len(idNames) && idNames[id] != ""
}

// Message is one protocol message. A keepalive (zero-length frame) has
// KeepAlive set and nothing else. Which other fields are used depends on ID:
//
//	Have, MetaRequest, MetaReject  Index
//	Request, Cancel, Reject        Index, Begin, Length
//	Piece                          Index, Begin, Block
//	Bitfield                       Bitfield
//	MetaData                       Index, Length (total metadata size), Block
//	PEX                            Peers
//
// Fields not used by the message's type are ignored when encoding and left
// zero when decoding.
type Message struct {
	KeepAlive            bool
	ID                   ID
	Index, Begin, Length uint32
	Bitfield             []byte   // Bitfield
	Block                []byte   // Piece, MetaData
	Peers                [][]byte // PEX
}

// Clone returns a deep copy of m that shares no memory with it, for callers
// that keep a message returned by [Reader.ReadMessage] past the next call.
func (m *Message) Clone() *Message {
	c := *m
	c.Bitfield = cloneBytes(m.Bitfield)
	c.Block = cloneBytes(m.Block)
	if m.Peers != nil {
		c.Peers = make([][]byte, len(m.Peers))
		for i, p := range m.Peers {
			c.Peers[i] = cloneBytes(p)
		}
	}
	return &c
}

// cloneBytes copies b, keeping nil as nil and empty as empty.
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// Append appends m's encoded frame (length prefix included) to b and
// returns the extended slice. It does not check m against the protocol's
// limits (WriteMessage does); an unknown ID is encoded with an empty
// payload, and a PEX list or record longer than 65535 is truncated in its
// count or length field.
func (m *Message) Append(b []byte) []byte {
	if m.KeepAlive {
		return append(b, 0, 0, 0, 0)
	}
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(m.ID))
	switch m.ID {
	case Have, MetaRequest, MetaReject:
		b = binary.BigEndian.AppendUint32(b, m.Index)
	case Request, Cancel, Reject:
		b = binary.BigEndian.AppendUint32(b, m.Index)
		b = binary.BigEndian.AppendUint32(b, m.Begin)
		b = binary.BigEndian.AppendUint32(b, m.Length)
	case Piece:
		b = binary.BigEndian.AppendUint32(b, m.Index)
		b = binary.BigEndian.AppendUint32(b, m.Begin)
		b = append(b, m.Block...)
	case MetaData:
		b = binary.BigEndian.AppendUint32(b, m.Index)
		b = binary.BigEndian.AppendUint32(b, m.Length)
		b = append(b, m.Block...)
	case Bitfield:
		b = append(b, m.Bitfield...)
	case PEX:
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Peers)))
		for _, p := range m.Peers {
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// check reports whether a peer's Reader would accept m, as far as that does
// not depend on the peer's piece count (Bitfield length is not checked).
func (m *Message) check() error {
	if m.KeepAlive {
		return nil
	}
	switch m.ID {
	case Request, Cancel, Reject:
		return checkRequestLength(m.ID, m.Length)
	case Piece:
		if len(m.Block) == 0 {
			return fmt.Errorf("%w: Piece with empty block", ErrBadLength)
		}
		if len(m.Block) > BlockSize {
			return fmt.Errorf("%w: Piece block of %d bytes, limit %d", ErrTooLarge, len(m.Block), BlockSize)
		}
	case MetaData:
		if len(m.Block) > metaPieceSize {
			return fmt.Errorf("%w: MetaData block of %d bytes, limit %d", ErrTooLarge, len(m.Block), metaPieceSize)
		}
	case PEX:
		if len(m.Peers) > maxPEXPeers {
			return fmt.Errorf("%w: PEX with %d peers, limit %d", ErrTooLarge, len(m.Peers), maxPEXPeers)
		}
		for _, p := range m.Peers {
			if len(p) > maxPEXRecord {
				return fmt.Errorf("%w: PEX peer record of %d bytes, limit %d", ErrTooLarge, len(p), maxPEXRecord)
			}
		}
	case Bitfield:
		if uint64(len(m.Bitfield)) >= 1<<32-1 {
			return fmt.Errorf("%w: Bitfield of %d bytes", ErrTooLarge, len(m.Bitfield))
		}
	default:
		if !m.ID.known() {
			return fmt.Errorf("%w: %v", ErrUnknownID, m.ID)
		}
	}
	return nil
}

func checkRequestLength(id ID, n uint32) error {
	if n == 0 {
		return fmt.Errorf("%w: %v of zero length", ErrBadLength, id)
	}
	if n > BlockSize {
		return fmt.Errorf("%w: %v length %d, limit %d", ErrTooLarge, id, n, BlockSize)
	}
	return nil
}

var writeBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 4+MaxMessage)
	return &b
}}

// WriteMessage encodes m and writes it to w with a single Write call. It
// refuses, without writing anything, a message that a peer's [Reader]
// would refuse (unknown id, oversized block, request length of 0 or over
// BlockSize, PEX over its limits); the Bitfield length is not checked since
// the limit depends on the piece count.
func WriteMessage(w io.Writer, m *Message) error {
	if err := m.check(); err != nil {
		return err
	}
	bp := writeBufs.Get().(*[]byte)
	b := m.Append((*bp)[:0])
	_, err := w.Write(b)
	if cap(b) <= 4*(4+MaxMessage) {
		*bp = b[:0]
		writeBufs.Put(bp)
	}
	if err != nil {
		if m.KeepAlive {
			return fmt.Errorf("wire: writing keepalive: %w", err)
		}
		return fmt.Errorf("wire: writing %v: %w", m.ID, err)
	}
	return nil
}

// unexpected turns io.EOF into io.ErrUnexpectedEOF, for reads that had to
// complete.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

package wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// readBufferSize is the read-ahead buffer of a Reader: enough to take a
// burst of small messages in one read from the stream. Larger payloads are
// read straight into the message buffer.
const readBufferSize = 4 << 10

// Reader reads messages from a stream, reusing one payload buffer.
//
// A Reader buffers: it may read ahead from the underlying reader, so once a
// Reader is made, read the stream only through it. (Read the handshake
// first with [ReadHandshake], which reads exactly 32 bytes.)
//
// A Reader is not safe for concurrent use.
type Reader struct {
	br          *bufio.Reader
	maxBitfield int
	hdr         [4]byte
	buf         []byte
	peers       [][]byte
}

// NewReader returns a Reader of r. maxBitfield is the size of a valid
// Bitfield, ceil(numPieces/8), or 0 if the piece count is not known yet
// (before the metadata has been fetched), in which case Bitfields of up to
// 128 KiB are accepted.
func NewReader(r io.Reader, maxBitfield int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), maxBitfield: maxBitfield}
}

// ReaderMemory is the most a Reader made with maxBitfield (as for
// [NewReader]) buffers: its read-ahead buffer and a payload buffer for the
// largest frame it accepts. The payload buffer grows to the largest frame
// read and is kept.
func ReaderMemory(maxBitfield int) int {
	r := Reader{maxBitfield: maxBitfield}
	return readBufferSize + int(max(8+BlockSize, 8+metaPieceSize, maxPEXPayload, r.bitfieldLimit()))
}

// SetMaxBitfield sets the largest Bitfield accepted from now on, as for
// [NewReader]; call it once the piece count becomes known.
func (r *Reader) SetMaxBitfield(n int) { r.maxBitfield = n }

func (r *Reader) bitfieldLimit() uint32 {
	if r.maxBitfield <= 0 {
		return defaultMaxBitfield
	}
	if uint64(r.maxBitfield) > 1<<32-2 {
		return 1<<32 - 2
	}
	return uint32(r.maxBitfield)
}

// ReadMessage reads the next message.
//
// At a clean end of stream between frames it returns io.EOF itself; a
// stream that ends inside a frame yields an error wrapping
// io.ErrUnexpectedEOF. A frame the protocol does not allow is refused with
// an error wrapping ErrUnknownID, ErrTooLarge or ErrBadLength; frames are
// refused on their length before their payload is read, so after any error
// the stream is out of step and the connection must be dropped.
//
// The returned Message is the caller's, but its Bitfield, Block and Peers
// slices point into the Reader's buffer: they are valid only until the next
// call to ReadMessage. Use [Message.Clone] (or copy the slices) to keep
// them longer.
func (r *Reader) ReadMessage() (*Message, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if err == io.EOF {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("wire: reading frame length: %w", err)
	}
	size := binary.BigEndian.Uint32(r.hdr[:])
	if size == 0 {
		return &Message{KeepAlive: true}, nil
	}
	c, err := r.br.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("wire: reading message id: %w", unexpected(err))
	}
	id := ID(c)
	n := size - 1 // payload length
	if err := r.checkSize(id, n); err != nil {
		return nil, err
	}
	if uint32(cap(r.buf)) < n {
		r.buf = make([]byte, n)
	}
	p := r.buf[:n]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return nil, fmt.Errorf("wire: reading %v payload of %d bytes: %w", id, n, unexpected(err))
	}
	return r.decode(id, p)
}

// checkSize refuses a payload length n that message type id does not allow.
func (r *Reader) checkSize(id ID, n uint32) error {
	exact := func(want uint32) error {
		if n != want {
			return fmt.Errorf("%w: %v payload of %d bytes, want %d", ErrBadLength, id, n, want)
		}
		return nil
	}
	switch id {
	case Choke, Unchoke, Interested, NotInterested, HaveAll, HaveNone:
		return exact(0)
	case Have, MetaRequest, MetaReject:
		return exact(4)
	case Request, Cancel, Reject:
		return exact(12)
	case Piece:
		switch {
		case n < 8:
			return fmt.Errorf("%w: Piece payload of %d bytes, want at least 9", ErrBadLength, n)
		case n == 8:
			return fmt.Errorf("%w: Piece with empty block", ErrBadLength)
		case n-8 > BlockSize:
			return fmt.Errorf("%w: Piece block of %d bytes, limit %d", ErrTooLarge, n-8, BlockSize)
		}
	case MetaData:
		switch {
		case n < 8:
			return fmt.Errorf("%w: MetaData payload of %d bytes, want at least 8", ErrBadLength, n)
		case n-8 > metaPieceSize:
			return fmt.Errorf("%w: MetaData block of %d bytes, limit %d", ErrTooLarge, n-8, metaPieceSize)
		}
	case Bitfield:
		if limit := r.bitfieldLimit(); n > limit {
			return fmt.Errorf("%w: Bitfield of %d bytes, limit %d", ErrTooLarge, n, limit)
		}
	case PEX:
		switch {
		case n < 2:
			return fmt.Errorf("%w: PEX payload of %d bytes, want at least 2", ErrBadLength, n)
		case n > maxPEXPayload:
			return fmt.Errorf("%w: PEX payload of %d bytes, limit %d", ErrTooLarge, n, maxPEXPayload)
		}
	default:
		return fmt.Errorf("%w: %v in frame of %d bytes", ErrUnknownID, id, n+1)
	}
	return nil
}

// decode builds the message from payload p, whose length checkSize has
// accepted for id. Slices are capped so that appending to them cannot
// overwrite the rest of the buffer.
func (r *Reader) decode(id ID, p []byte) (*Message, error) {
	m := &Message{ID: id}
	be := binary.BigEndian
	switch id {
	case Have, MetaRequest, MetaReject:
		m.Index = be.Uint32(p)
	case Request, Cancel, Reject:
		m.Index, m.Begin, m.Length = be.Uint32(p), be.Uint32(p[4:]), be.Uint32(p[8:])
		if err := checkRequestLength(id, m.Length); err != nil {
			return nil, err
		}
	case Piece:
		m.Index, m.Begin = be.Uint32(p), be.Uint32(p[4:])
		m.Block = p[8:len(p):len(p)]
	case MetaData:
		m.Index, m.Length = be.Uint32(p), be.Uint32(p[4:])
		m.Block = p[8:len(p):len(p)]
	case Bitfield:
		m.Bitfield = p[:len(p):len(p)]
	case PEX:
		peers, err := r.decodePEX(p)
		if err != nil {
			return nil, err
		}
		m.Peers = peers
	}
	return m, nil
}

// decodePEX parses a PEX payload: a 2-byte count, then each record as a
// 2-byte length and its bytes, with nothing left over.
func (r *Reader) decodePEX(p []byte) ([][]byte, error) {
	count := int(binary.BigEndian.Uint16(p))
	if count > maxPEXPeers {
		return nil, fmt.Errorf("%w: PEX with %d peers, limit %d", ErrTooLarge, count, maxPEXPeers)
	}
	p = p[2:]
	peers := r.peers[:0]
	for i := range count {
		if len(p) < 2 {
			return nil, fmt.Errorf("%w: PEX list ends in peer %d of %d", ErrBadLength, i, count)
		}
		l := int(binary.BigEndian.Uint16(p))
		if l > maxPEXRecord {
			return nil, fmt.Errorf("%w: PEX peer record of %d bytes, limit %d", ErrTooLarge, l, maxPEXRecord)
		}
		if len(p)-2 < l {
			return nil, fmt.Errorf("%w: PEX list ends in peer %d of %d", ErrBadLength, i, count)
		}
		peers = append(peers, p[2:2+l:2+l])
		p = p[2+l:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after PEX list of %d peers", ErrBadLength, len(p), count)
	}
	r.peers = peers
	return peers, nil
}

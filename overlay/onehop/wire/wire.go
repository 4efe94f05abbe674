package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Package wire is the one-hop forwarding protocol's wire format: the
// protocol IDs, the header that names a peer, and the status an
// intermediate or a destination answers with. It has no sockets; the
// client (both ends of a forwarded stream) and the server (the
// intermediate) are in the packages beside it.
//
// One-hop forwarding. A, whose direct path to C is bad, opens a stream to
// the intermediate B with FwdProtocol and names C in a forwarding header. B
// checks that A and C are members of its group, opens a stream to C with
// FwdInProtocol, names A in the same kind of header, and splices the two
// streams. C answers with a status; so does B when it refuses. A and C then
// run a libp2p security handshake (Noise) over the spliced bytes, so B
// carries only ciphertext and cannot pretend to be either end, and select
// the application protocol inside the secured channel.
const (
	FwdProtocol   = "/peer/ron/fwd/1.0.0"    // to the intermediate: forward me to the named peer
	FwdInProtocol = "/peer/ron/fwd-in/1.0.0" // from the intermediate: a stream from the named peer
)

// Limits of the forwarding wire format.
const (
	fwdVersion    = 1
	MaxPeerIDLen  = 128 // bytes of a peer ID in a header
	MaxReasonLen  = 512 // bytes of a refusal reason
	statusOK      = 0
	statusRefused = 1
)

// ErrBadHeader is what a malformed forwarding header or status decodes to.
var ErrBadHeader = errors.New("onehop: malformed forwarding header")

// RefusedError is a refusal to forward or accept a forwarded stream, as
// the refusing peer worded it.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "forwarding refused: " + e.Reason }

// AppendFwdHeader appends the header naming p: a version byte, then p's
// bytes with a varint length.
func AppendFwdHeader(b []byte, p peer.ID) []byte {
	b = append(b, fwdVersion)
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// ReadFwdHeader reads one header from r, reading no byte past it (what
// follows belongs to the spliced stream), and returns the peer it names.
func ReadFwdHeader(r io.Reader) (peer.ID, error) {
	br := byteReader{r: r}
	v, err := br.ReadByte()
	if err != nil {
		return "", fmt.Errorf("read forwarding header: %w", err)
	}
	if v != fwdVersion {
		return "", fmt.Errorf("%w: version %d, want %d", ErrBadHeader, v, fwdVersion)
	}
	n, err := br.uvarint()
	if err != nil {
		return "", fmt.Errorf("%w: length: %v", ErrBadHeader, err)
	}
	if n == 0 || n > MaxPeerIDLen {
		return "", fmt.Errorf("%w: peer ID of %d bytes", ErrBadHeader, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("%w: peer ID: %v", ErrBadHeader, err)
	}
	p, err := peer.IDFromBytes(b)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadHeader, err)
	}
	return p, nil
}

// AppendStatus appends a status: accepted when refusal is empty, refused
// with that reason otherwise (cut to MaxReasonLen on a rune boundary).
func AppendStatus(b []byte, refusal string) []byte {
	if refusal == "" {
		return append(b, statusOK)
	}
	if len(refusal) > MaxReasonLen {
		cut := MaxReasonLen
		for cut > 0 && !utf8.RuneStart(refusal[cut]) {
			cut--
		}
		refusal = refusal[:cut]
	}
	b = append(b, statusRefused)
	b = binary.AppendUvarint(b, uint64(len(refusal)))
	return append(b, refusal...)
}

// ReadStatus reads one status from r, reading no byte past it. It returns
// nil for accepted, a *RefusedError for a refusal, or why it could not read
// one.
func ReadStatus(r io.Reader) error {
	br := byteReader{r: r}
	s, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("read forwarding status: %w", err)
	}
	switch s {
	case statusOK:
		return nil
	case statusRefused:
	default:
		return fmt.Errorf("%w: status %d", ErrBadHeader, s)
	}
	n, err := br.uvarint()
	if err != nil {
		return fmt.Errorf("%w: reason length: %v", ErrBadHeader, err)
	}
	if n == 0 || n > MaxReasonLen {
		// AppendStatus never writes an empty reason: that is "accepted".
		return fmt.Errorf("%w: reason of %d bytes", ErrBadHeader, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: reason: %v", ErrBadHeader, err)
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: reason is not UTF-8", ErrBadHeader)
	}
	return &RefusedError{Reason: string(b)}
}

// uvarint reads a varint in its shortest form; any other form is refused,
// so that one header has one encoding.
func (b *byteReader) uvarint() (uint64, error) {
	b.n = 0
	v, err := binary.ReadUvarint(b)
	if err != nil {
		return 0, err
	}
	if b.n != len(binary.AppendUvarint(nil, v)) {
		return 0, errors.New("varint not in its shortest form")
	}
	return v, nil
}

// byteReader reads one byte at a time, so that a decoder never takes bytes
// that follow what it decodes.
type byteReader struct {
	r   io.Reader
	buf [1]byte
	n   int // bytes read
}

func (b *byteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(b.r, b.buf[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return 0, err
	}
	b.n++
	return b.buf[0], nil
}

// Forwarded is what a forwarded stream has that others have not: the
// intermediate it travels through.
type Forwarded interface {
	Via() peer.ID
}

// ViaOf reports the intermediate a stream (or anything) travels through,
// or "" when it is not a forwarded stream.
func ViaOf(s any) peer.ID {
	if f, ok := s.(Forwarded); ok {
		return f.Via()
	}
	return ""
}

// Refusable is the part of a stream a refusal needs.
type Refusable interface {
	io.WriteCloser
	SetWriteDeadline(time.Time) error
}

// Refuse writes a refusal with reason, within a second, and closes st.
func Refuse(st Refusable, reason string) {
	_ = st.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = st.Write(AppendStatus(nil, reason))
	_ = st.Close()
}

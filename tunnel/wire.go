// Package tunnel carries TCP connections over overlay streams to services
// exposed by name: a peer exposes a name for one backend address, and any
// peer forwards a local port to the name's providers, the best first.
//
// The exposing side dials only the address it exposed, for callers on its
// allow-list: it is never an open proxy. The wire is one request (the
// service name) and one answer (accepted, or why not) before the bytes.
package tunnel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Protocol is the stream protocol of tunnels.
const Protocol protocol.ID = "/peer/tunnel/1.0.0"

// Wire limits.
const (
	version    = 1
	maxName    = 253
	maxMessage = 512
)

// ErrMalformed: a request or answer that does not decode.
var ErrMalformed = errors.New("malformed tunnel message")

// WriteRequest asks for the service name.
func WriteRequest(w io.Writer, name string) error {
	if len(name) == 0 || len(name) > maxName {
		return fmt.Errorf("tunnel: service name of %d bytes: %w", len(name), ErrMalformed)
	}
	b := []byte{version}
	b = binary.AppendUvarint(b, uint64(len(name)))
	_, err := w.Write(append(b, name...))
	return err
}

// ReadRequest reads what WriteRequest wrote.
func ReadRequest(r *bufio.Reader) (string, error) {
	v, err := r.ReadByte()
	if err != nil {
		return "", err
	}
	if v != version {
		return "", fmt.Errorf("tunnel: version %d: %w", v, ErrMalformed)
	}
	b, err := readField(r, 1, maxName)
	return string(b), err
}

// Answers.
const (
	accepted = 0
	refused  = 1
)

// WriteAnswer accepts the tunnel (why == "") or refuses it, saying why.
func WriteAnswer(w io.Writer, why string) error {
	if len(why) > maxMessage {
		why = why[:maxMessage]
	}
	b := []byte{accepted}
	if why != "" {
		b[0] = refused
	}
	b = binary.AppendUvarint(b, uint64(len(why)))
	_, err := w.Write(append(b, why...))
	return err
}

// ReadAnswer returns nil when the tunnel was accepted, a RefusedError
// when it was refused, and another error when the answer is bad.
func ReadAnswer(r *bufio.Reader) error {
	code, err := r.ReadByte()
	if err != nil {
		return err
	}
	if code != accepted && code != refused {
		return fmt.Errorf("tunnel: answer %d: %w", code, ErrMalformed)
	}
	min := 0
	if code == refused {
		min = 1
	}
	why, err := readField(r, min, maxMessage)
	if err != nil {
		return err
	}
	if code == accepted {
		if len(why) > 0 {
			return fmt.Errorf("tunnel: an acceptance with a reason: %w", ErrMalformed)
		}
		return nil
	}
	return RefusedError{Why: string(why)}
}

// RefusedError is a provider's refusal.
type RefusedError struct{ Why string }

func (e RefusedError) Error() string { return "refused: " + e.Why }

// readField reads a uvarint length between min and max, then that many
// bytes.
func readField(r *bufio.Reader, min, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("tunnel: length: %v: %w", err, ErrMalformed)
	}
	if n < uint64(min) || n > uint64(max) {
		return nil, fmt.Errorf("tunnel: field of %d bytes (%d to %d): %w", n, min, max, ErrMalformed)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("tunnel: field: %v: %w", err, ErrMalformed)
	}
	return b, nil
}

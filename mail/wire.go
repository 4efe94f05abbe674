package mail

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/peer-overlay/peer/dht/record"
)

// Protocol is the stream protocol of direct delivery: the sender writes
// one frame, a mail record; the recipient answers with one reply frame.
const Protocol = "/peer/mail/1.0.0"

// maxReason bounds a refusal's text.
const maxReason = 1024

// ErrMalformed marks a frame that does not decode.
var ErrMalformed = errors.New("mail: malformed frame")

// WriteDelivery writes rec as a delivery frame: a uvarint length, then
// the record's encoding.
func WriteDelivery(w io.Writer, rec *record.Record) error {
	enc := rec.Marshal()
	b := binary.AppendUvarint(make([]byte, 0, len(enc)+3), uint64(len(enc)))
	_, err := w.Write(append(b, enc...))
	return err
}

// ReadDelivery reads one delivery frame and decodes its record (it does
// not verify it: see Open).
func ReadDelivery(r *bufio.Reader) (*record.Record, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %v", ErrMalformed, err)
	}
	if n == 0 || n > record.MaxEncoded {
		return nil, fmt.Errorf("%w: a delivery of %d bytes (limit %d)", ErrMalformed, n, record.MaxEncoded)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	rec, err := record.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return rec, nil
}

// WriteReply answers a delivery: taken when refusal is nil.
func WriteReply(w io.Writer, refusal error) error {
	if refusal == nil {
		_, err := w.Write([]byte{0})
		return err
	}
	msg := refusal.Error()
	if len(msg) > maxReason {
		msg = msg[:maxReason]
	}
	b := binary.AppendUvarint([]byte{1}, uint64(len(msg)))
	_, err := w.Write(append(b, msg...))
	return err
}

// Refused is a recipient's refusal of a delivery.
type Refused struct{ Reason string }

func (e *Refused) Error() string { return "refused by the recipient: " + e.Reason }

// ReadReply reads the answer to a delivery: nil when the recipient took
// the message, a *Refused when it refused it.
func ReadReply(r *bufio.Reader) error {
	k, err := r.ReadByte()
	if err != nil {
		return fmt.Errorf("%w: no reply: %v", ErrMalformed, err)
	}
	switch k {
	case 0:
		return nil
	case 1:
		n, err := binary.ReadUvarint(r)
		if err != nil || n > maxReason {
			return fmt.Errorf("%w: a refusal of %d bytes", ErrMalformed, n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return &Refused{Reason: string(b)}
	}
	return fmt.Errorf("%w: reply kind %d", ErrMalformed, k)
}

package overlay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// maxPacketSize bounds one memberlist packet carried on a packet stream.
// memberlist keeps packets under its UDPBufferSize (1,400 bytes by default);
// the bound leaves room for larger gossip settings while keeping a hostile
// peer from making us allocate much.
const maxPacketSize = 64 << 10

// ErrFrameTooLarge is returned for a frame whose declared length exceeds
// maxPacketSize.
var ErrFrameTooLarge = errors.New("overlay: frame larger than 64 KiB")

// appendFrame appends one length-prefixed frame (uvarint length, payload).
func appendFrame(dst, payload []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(payload)))
	return append(dst, payload...)
}

// readFrame reads one frame written by appendFrame. It returns io.EOF only
// when the stream ends cleanly between frames.
func readFrame(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("overlay: frame length: %w", err)
	}
	if n > maxPacketSize {
		return nil, fmt.Errorf("%w (declared %d bytes)", ErrFrameTooLarge, n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("overlay: frame body: %w", io.ErrUnexpectedEOF)
	}
	return buf, nil
}

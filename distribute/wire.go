// Package distribute holds what `peer distribute` needs beside the node:
// the wire format of its stream protocol, the policy that says who may
// order a peer to fetch, and the report's arithmetic.
package distribute

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Protocol is the stream protocol of distribution: the origin writes one
// request frame (an order, or a status request) and the target answers
// with one reply frame, then the stream ends.
const Protocol = "/peer/distribute/1.0.0"

// Frame: a uvarint length, then that many bytes: a kind byte and its
// fields. Integers are uvarints, strings a uvarint length and the bytes,
// the infohash 20 bytes, the rate 8 bytes (IEEE 754, big endian).
const (
	kindOrder  = 1
	kindStatus = 2
	kindReply  = 3
)

// Bounds of a frame and its fields.
const (
	MaxFrame  = 8192
	MaxHints  = 64
	maxPeerID = 64
	maxJob    = 64
	maxName   = 255
	maxReason = 1024
	maxState  = 16
)

// ErrMalformed marks a frame that does not decode.
var ErrMalformed = errors.New("distribute: malformed frame")

// Order tells a target to fetch a swarm. Name and Size are what the origin
// says of it, for the target's disk check and display; the manifest itself
// comes from the swarm and is what counts. Hints are peers likely in the
// swarm (the job's other targets), to dial before discovery finds them.
type Order struct {
	Hash  [20]byte
	Job   string
	Name  string
	Size  int64
	Hints []peer.ID
}

// StatusRequest asks a target how far its fetch of Hash is.
type StatusRequest struct {
	Hash [20]byte
}

// Target states as a reply gives them.
const (
	StateFetching = "fetching"
	StateDone     = "done"
	StateFailed   = "failed"
	StateRefused  = "refused"
	StateUnknown  = "unknown" // no order for that infohash
)

// Reply answers an order or a status request.
type Reply struct {
	State  string
	Reason string // why refused or failed
	Have   int    // pieces verified
	Pieces int    // pieces in all, 0 while the manifest is unknown
	Bytes  int64  // bytes downloaded so far
	Size   int64  // the data's size, 0 while unknown
	Rate   float64
	// Seconds is how long the fetch took, from the order to the last
	// piece verified (so far, while it runs), by the target's clock.
	Seconds float64
}

// Request is what the origin sends: exactly one of Order and Status is set.
type Request struct {
	Order  *Order
	Status *StatusRequest
}

type encoder struct{ b []byte }

func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) str(s string)    { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) hash(h [20]byte) { e.b = append(e.b, h[:]...) }

// float writes a finite, non-negative number (anything else as 0).
func (e *encoder) float(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		v = 0
	}
	e.b = binary.BigEndian.AppendUint64(e.b, math.Float64bits(v))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func frame(body []byte) []byte {
	return append(binary.AppendUvarint(make([]byte, 0, len(body)+2), uint64(len(body))), body...)
}

// EncodeRequest encodes r as a frame. Strings too long are cut to their
// bounds.
func EncodeRequest(r Request) ([]byte, error) {
	var e encoder
	switch {
	case r.Order != nil && r.Status == nil:
		o := r.Order
		if o.Size < 0 {
			return nil, fmt.Errorf("distribute: a size of %d", o.Size)
		}
		e.b = append(e.b, kindOrder)
		e.hash(o.Hash)
		e.str(clip(o.Job, maxJob))
		e.str(clip(o.Name, maxName))
		e.uint(uint64(o.Size))
		hints := o.Hints[:min(len(o.Hints), MaxHints)]
		e.uint(uint64(len(hints)))
		for _, h := range hints {
			e.str(string(h))
		}
	case r.Status != nil && r.Order == nil:
		e.b = append(e.b, kindStatus)
		e.hash(r.Status.Hash)
	default:
		return nil, errors.New("distribute: a request is an order or a status request")
	}
	return frame(e.b), nil
}

// EncodeReply encodes r as a frame.
func EncodeReply(r Reply) ([]byte, error) {
	if r.Have < 0 || r.Pieces < 0 || r.Bytes < 0 || r.Size < 0 {
		return nil, errors.New("distribute: a negative count in a reply")
	}
	var e encoder
	e.b = append(e.b, kindReply)
	e.str(clip(r.State, maxState))
	e.str(clip(r.Reason, maxReason))
	e.uint(uint64(r.Have))
	e.uint(uint64(r.Pieces))
	e.uint(uint64(r.Bytes))
	e.uint(uint64(r.Size))
	e.float(r.Rate)
	e.float(r.Seconds)
	return frame(e.b), nil
}

// readFrame reads one frame's body.
func readFrame(r *bufio.Reader) ([]byte, error) {
	cr := &countReader{r: r}
	n, err := binary.ReadUvarint(cr)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %v", ErrMalformed, err)
	}
	if n == 0 || n > MaxFrame || cr.n != uvarintLen(n) {
		return nil, fmt.Errorf("%w: a frame of %d bytes (limit %d)", ErrMalformed, n, MaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return b, nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r *bufio.Reader
	n int
}

func (c *countReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uint(what string, limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.b)
	// Only the shortest encoding of a number is taken: one message, one
	// encoding.
	if k <= 0 || v > limit || k != uvarintLen(v) {
		d.fail(what)
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *decoder) str(what string, limit int) string {
	n := d.uint(what+" length", uint64(limit))
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) hash() (h [20]byte) {
	if d.err != nil || len(d.b) < len(h) {
		d.fail("infohash")
		return h
	}
	copy(h[:], d.b)
	d.b = d.b[len(h):]
	return h
}

// float reads a finite, non-negative number.
func (d *decoder) float(what string) float64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := math.Float64frombits(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		d.fail(what)
		return 0
	}
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d bytes after the last field", len(d.b)))
	}
	return d.err
}

func uvarintLen(v uint64) int {
	k := 1
	for ; v >= 0x80; v >>= 7 {
		k++
	}
	return k
}

// maxCount bounds counts and sizes (2^53: exact in a float64 too).
const maxCount = 1 << 53

// DecodeRequest decodes a request frame's body.
func DecodeRequest(b []byte) (Request, error) {
	d := decoder{b: b}
	switch k := d.byte("kind"); k {
	case kindOrder:
		o := &Order{Hash: d.hash()}
		o.Job = d.str("job", maxJob)
		o.Name = d.str("name", maxName)
		o.Size = int64(d.uint("size", maxCount))
		k := d.uint("hints", MaxHints)
		for range k {
			b := d.str("hint", maxPeerID)
			if d.err != nil {
				break
			}
			id, err := peer.IDFromBytes([]byte(b))
			if err != nil {
				d.fail("hint: " + err.Error())
				break
			}
			o.Hints = append(o.Hints, id)
		}
		if err := d.end(); err != nil {
			return Request{}, err
		}
		return Request{Order: o}, nil
	case kindStatus:
		s := &StatusRequest{Hash: d.hash()}
		if err := d.end(); err != nil {
			return Request{}, err
		}
		return Request{Status: s}, nil
	default:
		if d.err != nil {
			return Request{}, d.err
		}
		return Request{}, fmt.Errorf("%w: request kind %d", ErrMalformed, k)
	}
}

// DecodeReply decodes a reply frame's body.
func DecodeReply(b []byte) (Reply, error) {
	d := decoder{b: b}
	if k := d.byte("kind"); d.err == nil && k != kindReply {
		return Reply{}, fmt.Errorf("%w: reply kind %d", ErrMalformed, k)
	}
	var r Reply
	r.State = d.str("state", maxState)
	r.Reason = d.str("reason", maxReason)
	r.Have = int(d.uint("have", math.MaxInt32))
	r.Pieces = int(d.uint("pieces", math.MaxInt32))
	r.Bytes = int64(d.uint("bytes", maxCount))
	r.Size = int64(d.uint("size", maxCount))
	r.Rate = d.float("rate")
	r.Seconds = d.float("seconds")
	if err := d.end(); err != nil {
		return Reply{}, err
	}
	switch r.State {
	case StateFetching, StateDone, StateFailed, StateRefused, StateUnknown:
	default:
		return Reply{}, fmt.Errorf("%w: state %q", ErrMalformed, r.State)
	}
	if r.Have > r.Pieces {
		return Reply{}, fmt.Errorf("%w: %d of %d pieces", ErrMalformed, r.Have, r.Pieces)
	}
	return r, nil
}

// ReadRequest reads and decodes one request frame.
func ReadRequest(r *bufio.Reader) (Request, error) {
	b, err := readFrame(r)
	if err != nil {
		return Request{}, err
	}
	return DecodeRequest(b)
}

// ReadReply reads and decodes one reply frame.
func ReadReply(r *bufio.Reader) (Reply, error) {
	b, err := readFrame(r)
	if err != nil {
		return Reply{}, err
	}
	return DecodeReply(b)
}

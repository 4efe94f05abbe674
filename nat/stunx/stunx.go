// Package stunx is the STUN wire code of the NAT layer, on top of
// github.com/pion/stun/v3: the Binding request a peer sends from its QUIC
// socket to learn its public mapping, the parser of the answer, the filter
// that tells STUN from the other datagrams on that shared socket, and the
// Responder a supernode runs to answer other peers' requests.
//
// Everything here is pure: no sockets, no goroutines, no wall clock and no
// global random source. Transaction IDs come from a reader the caller
// passes in and the Responder takes the time as an argument, so the binding
// in package nat does the I/O and the tests here run on scripted inputs.
//
// No amplification: a Responder never answers with more bytes than the
// request it got. To make that possible our own requests are padded to
// RequestSize (64 bytes) with a SOFTWARE attribute, larger than the
// largest answer (MaxAnswerSize, 52 bytes, for an IPv6 mapping). A minimal
// 20-byte Binding request from some other STUN client is refused, not
// answered.
package stunx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/pion/stun/v3"
)

// TxID is a STUN transaction ID: 96 bits that tie an answer to its request.
type TxID [stun.TransactionIDSize]byte

// Sizes of the messages this package writes, in bytes on the wire.
const (
	// HeaderSize is the fixed STUN message header.
	HeaderSize = 20
	// RequestSize is the size of every request NewBindingRequest builds:
	// the header, a SOFTWARE attribute of 32 bytes (4 + 32) and a
	// FINGERPRINT (4 + 4). It is at least MaxAnswerSize, so a Responder
	// can answer it without amplification.
	RequestSize = HeaderSize + 4 + len(softwarePad) + 8
	// MaxAnswerSize is the size of the largest answer a Responder writes:
	// the header, an XOR-MAPPED-ADDRESS for an IPv6 address (4 + 20) and
	// a FINGERPRINT (4 + 4). An IPv4 answer is 40 bytes.
	MaxAnswerSize = HeaderSize + 4 + 20 + 8
)

// softwarePad is the SOFTWARE value that pads our requests. Its length is
// a multiple of 4, so the attribute needs no padding of its own, and it
// names the sender for anyone reading a capture.
const softwarePad = "peer-overlay nat/stunx bind pad."

// Errors ParseBindingResponse wraps, so that callers can tell what was
// wrong with errors.Is while the message carries the detail.
var (
	// ErrNotSTUN means the bytes are not a STUN message at all.
	ErrNotSTUN = errors.New("stunx: not a STUN message")
	// ErrMalformed means the bytes claim to be STUN but do not decode.
	ErrMalformed = errors.New("stunx: malformed STUN message")
	// ErrNotBindingResponse means a well-formed STUN message of another
	// method or class (a request, an indication, another method).
	ErrNotBindingResponse = errors.New("stunx: not a Binding response")
	// ErrErrorResponse means the server answered with a Binding error.
	ErrErrorResponse = errors.New("stunx: Binding error response")
	// ErrNoAddress means the answer has neither XOR-MAPPED-ADDRESS nor
	// MAPPED-ADDRESS.
	ErrNoAddress = errors.New("stunx: no mapped address in answer")
	// ErrBadAddress means the mapped address attribute is malformed or
	// holds an address no peer could be reached at (unspecified, port 0).
	ErrBadAddress = errors.New("stunx: bad mapped address")
)

// NewTxID reads a fresh transaction ID from r (crypto/rand.Reader in the
// binding; a seeded source in tests). IDs must be unpredictable: an
// off-path attacker who guesses one can forge our mapping.
func NewTxID(r io.Reader) (TxID, error) {
	var id TxID
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return TxID{}, fmt.Errorf("stunx: reading transaction ID: %w", err)
	}
	return id, nil
}

// NewBindingRequest returns a Binding request with transaction ID tx,
// padded to exactly RequestSize bytes with a SOFTWARE attribute and closed
// by a FINGERPRINT. The padding is what lets a Responder answer without
// sending back more than it received.
func NewBindingRequest(tx TxID) []byte {
	m := stun.New()
	m.SetType(stun.BindingRequest)
	m.TransactionID = tx
	m.WriteHeader()
	m.Add(stun.AttrSoftware, []byte(softwarePad))
	if err := stun.Fingerprint.AddTo(m); err != nil {
		// AddTo never fails on a message we built ourselves.
		panic("stunx: fingerprint: " + err.Error())
	}
	return append([]byte(nil), m.Raw...)
}

// IsSTUN reports whether b looks like a STUN message: long enough, the
// magic cookie in place (stun.IsMessage), and the two top bits of the
// first byte clear. QUIC packets always have one of those bits set and
// hole punches write random bytes, so the binding uses this to pick STUN
// out of the datagrams quic-go hands over from the shared socket. It does
// not promise the message decodes.
func IsSTUN(b []byte) bool {
	return stun.IsMessage(b) && b[0]&0xC0 == 0
}

// ParseBindingResponse reads a Binding success response: its transaction
// ID and the mapped address, from XOR-MAPPED-ADDRESS or, when that is
// absent, from MAPPED-ADDRESS (servers of RFC 3489 vintage). An IPv4
// address comes back as a 4-byte netip.Addr. Malformed input, another kind
// of message, a Binding error, a bad FINGERPRINT or an address no one
// could dial (unspecified, port 0) is an error wrapping one of the Err
// values above. The ID is returned with every error that comes after the
// message decoded (a Binding error among them), so the caller can match it
// with its outstanding request and stop retrying; that matching is the
// caller's job.
func ParseBindingResponse(b []byte) (TxID, netip.AddrPort, error) {
	m, err := decode(b)
	if err != nil {
		return TxID{}, netip.AddrPort{}, err
	}
	tx := TxID(m.TransactionID)
	switch {
	case m.Type == stun.BindingError:
		var code stun.ErrorCodeAttribute
		if code.GetFrom(m) == nil {
			return tx, netip.AddrPort{}, fmt.Errorf("%w: %d %q", ErrErrorResponse, code.Code, code.Reason)
		}
		return tx, netip.AddrPort{}, ErrErrorResponse
	case m.Type != stun.BindingSuccess:
		return tx, netip.AddrPort{}, fmt.Errorf("%w: got %s", ErrNotBindingResponse, m.Type)
	}
	ap, err := mappedAddr(m)
	if err != nil {
		return tx, netip.AddrPort{}, err
	}
	return tx, ap, nil
}

// decode checks the framing pion does not (length a multiple of 4 and
// equal to the datagram, top bits clear, FINGERPRINT last and right) and
// decodes b into a message that owns its bytes.
func decode(b []byte) (*stun.Message, error) {
	if !IsSTUN(b) {
		return nil, ErrNotSTUN
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 {
		return nil, fmt.Errorf("%w: length %d is not a multiple of 4", ErrMalformed, n)
	}
	if HeaderSize+n != len(b) {
		return nil, fmt.Errorf("%w: header says %d bytes, datagram has %d", ErrMalformed, HeaderSize+n, len(b))
	}
	m := new(stun.Message)
	if err := stun.Decode(b, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	for i, a := range m.Attributes {
		if a.Type != stun.AttrFingerprint {
			continue
		}
		if i != len(m.Attributes)-1 {
			return nil, fmt.Errorf("%w: FINGERPRINT is not the last attribute", ErrMalformed)
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			return nil, fmt.Errorf("%w: FINGERPRINT: %v", ErrMalformed, err)
		}
	}
	return m, nil
}

// mappedAddr reads XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS. It checks the
// raw value's length itself before pion's getters read it: they trust the
// length more than they should.
func mappedAddr(m *stun.Message) (netip.AddrPort, error) {
	if v, err := m.Get(stun.AttrXORMappedAddress); err == nil {
		if err := checkAddrValue(v); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: XOR-MAPPED-ADDRESS: %v", ErrBadAddress, err)
		}
		var a stun.XORMappedAddress
		if err := a.GetFrom(m); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: XOR-MAPPED-ADDRESS: %v", ErrBadAddress, err)
		}
		return toAddrPort(a.IP, a.Port)
	}
	if v, err := m.Get(stun.AttrMappedAddress); err == nil {
		if err := checkAddrValue(v); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: MAPPED-ADDRESS: %v", ErrBadAddress, err)
		}
		var a stun.MappedAddress
		if err := a.GetFrom(m); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%w: MAPPED-ADDRESS: %v", ErrBadAddress, err)
		}
		return toAddrPort(a.IP, a.Port)
	}
	return netip.AddrPort{}, ErrNoAddress
}

// checkAddrValue checks an address attribute's value: family 1 with 4
// address bytes or family 2 with 16.
func checkAddrValue(v []byte) error {
	if len(v) < 4 {
		return fmt.Errorf("value of %d bytes", len(v))
	}
	switch fam := binary.BigEndian.Uint16(v[0:2]); {
	case fam == 1 && len(v) == 8, fam == 2 && len(v) == 20:
		return nil
	case fam == 1 || fam == 2:
		return fmt.Errorf("family %d with a value of %d bytes", fam, len(v))
	default:
		return fmt.Errorf("unknown family %d", fam)
	}
}

// toAddrPort turns a decoded address into a netip.AddrPort, refusing what
// no peer could be reached at.
func toAddrPort(ip net.IP, port int) (netip.AddrPort, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%w: %d address bytes", ErrBadAddress, len(ip))
	}
	a = a.Unmap()
	if a.IsUnspecified() || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: %s", ErrBadAddress, netip.AddrPortFrom(a, uint16(port)))
	}
	return netip.AddrPortFrom(a, uint16(port)), nil
}

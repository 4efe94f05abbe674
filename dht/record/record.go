// Package record holds the signed records that the Chord ring stores and
// replicates, and a persistent store for them.
//
// A record is a small statement signed by its publisher's libp2p key:
//
//   - a value record (KindValue) says "key holds value". There is one per
//     key, and it is owned: the first valid claim of a key wins, and from
//     then on only its owner's signature updates or releases it (see
//     Replaces). Names, services and kv keys are value records.
//   - a provider record (KindProvider) says "the publisher provides key";
//     its value is optional address bytes. There is one per (key,
//     publisher), so many peers can provide the same key side by side.
//   - a mail record (KindMail) is a message its publisher, the sender,
//     left in the mailbox of the peer the key names (MailboxKey); its
//     value is sealed to that peer, and Seq orders the sender's messages.
//     There is one per (key, publisher, Seq).
//   - a mail acknowledgement (KindMailAck), signed by the mailbox's own
//     peer, says it has every message of one sender (the value) up to
//     Seq; replicas then drop those messages and refuse them again.
//
// Every record carries a sequence number and an absolute expiry, its
// lease, at most MaxTTL (plus MaxClockSkew) ahead of the verifier's clock;
// the owner republishes before it runs out. A value record also carries
// when its owner first claimed the key, and a release flag. The signature
// covers a canonical, domain-separated encoding of all of them, so none
// can be changed in transit; the public key is carried in the record, and
// names the publisher.
//
// Replacement rule: records are filed under their StoreKey (the key's ring
// position, the kind and, for providers, the publisher's peer ID). A new
// record replaces the stored one under the same StoreKey if the stored one
// has expired, or if both come from one publisher and the new Seq is
// strictly greater. An equal or lower Seq is ignored without error, which
// makes replication idempotent. A value record of another publisher
// replaces a live one only if that one is a release, or if both claims
// are of the same moment and the new one is earlier (Replaces).
package record

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
)

// Kind says what a record states.
type Kind uint8

const (
	// KindValue is a key/value record: one per key, the highest Seq wins.
	KindValue Kind = 1
	// KindProvider says "the publisher provides key": one per (key,
	// publisher); Value is optional address bytes.
	KindProvider Kind = 2
	// KindMail is a sealed message held for the mailbox's peer: one per
	// (key, publisher, Seq).
	KindMail Kind = 3
	// KindMailAck is the mailbox peer's acknowledgement of one sender's
	// messages up to Seq: one per (key, sender).
	KindMailAck Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindValue:
		return "value"
	case KindProvider:
		return "provider"
	case KindMail:
		return "mail"
	case KindMailAck:
		return "mail-ack"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) known() bool { return k >= KindValue && k <= KindMailAck }

// mailbox says whether records of k live in a mailbox.
func (k Kind) mailbox() bool { return k == KindMail || k == KindMailAck }

// mailboxPrefix starts every mailbox key; the rest is the owner's peer ID.
const mailboxPrefix = "mbox:"

// MailboxKey is the key of id's mailbox.
func MailboxKey(id peer.ID) []byte { return []byte(mailboxPrefix + id.String()) }

// MailboxOwner returns the peer whose mailbox key is, or an error wrapping
// ErrMalformed when key is not a mailbox key of a peer whose public key
// the ID holds (messages are sealed to that key).
func MailboxOwner(key []byte) (peer.ID, error) {
	s, ok := strings.CutPrefix(string(key), mailboxPrefix)
	if !ok {
		return "", fmt.Errorf("record: %q is not a mailbox key: %w", key, ErrMalformed)
	}
	id, err := peer.Decode(s)
	if err != nil || id.String() != s {
		return "", fmt.Errorf("record: mailbox key %q names no peer: %w", key, ErrMalformed)
	}
	if _, err := id.ExtractPublicKey(); err != nil {
		return "", fmt.Errorf("record: mailbox key %q names a peer whose ID holds no public key: %w", key, ErrMalformed)
	}
	return id, nil
}

// checkMailbox checks what a mailbox record must satisfy beyond the
// signature: a mailbox key, and for an acknowledgement, the mailbox
// owner's signature and a sender's peer ID as the value.
func (r *Record) checkMailbox() error {
	if !r.Kind.mailbox() {
		return nil
	}
	owner, err := MailboxOwner(r.Key)
	if err != nil {
		return err
	}
	if r.Kind == KindMail {
		return nil
	}
	if p, err := r.Publisher(); err != nil || p != owner {
		return fmt.Errorf("record: an acknowledgement in %s's mailbox signed by %s: %w", owner, p, ErrMalformed)
	}
	if _, err := peer.IDFromBytes(r.Value); err != nil {
		return fmt.Errorf("record: an acknowledgement that names no sender: %w", ErrMalformed)
	}
	return nil
}

// Limits. A record outside them is refused by New, Verify and Unmarshal.
const (
	// MaxKey is the largest key, in bytes. Keys must not be empty.
	MaxKey = 1024
	// MaxValue is the largest value, in bytes.
	MaxValue = 16 << 10
	// MaxPubKey is the largest marshaled public key, in bytes (an Ed25519
	// key takes 36; RSA keys up to 4096 bits fit).
	MaxPubKey = 1024
	// MaxSig is the largest signature, in bytes (Ed25519 takes 64).
	MaxSig = 1024
	// MaxTTL is how far ahead of now a record may expire.
	MaxTTL = 7 * 24 * time.Hour
	// MaxClockSkew is the slack allowed on top of MaxTTL for a publisher
	// whose clock runs ahead of ours.
	MaxClockSkew = 5 * time.Minute

	// ClaimWindow is how close to now two claims of one key by different
	// owners must both be to count as made in the same moment. Between
	// those, the earlier claim wins on every replica (ties: the smaller
	// SHA-256 of the owner's public key), so replicas that saw them in
	// different orders converge. A claim older than this never displaces
	// a live one, so a key held for longer cannot be taken by a claim
	// that lies about its time.
	ClaimWindow = 2 * time.Minute

	// lenPrefix bounds a uvarint length prefix for any of the limits
	// above (all are below 2^21).
	lenPrefix = 3

	// MaxEncoded bounds the length of Marshal's output for a record within
	// the limits: version, kind, four length-prefixed fields, three 64-bit
	// varints and a flags byte.
	MaxEncoded = 1 + 1 +
		lenPrefix + MaxKey +
		lenPrefix + MaxValue +
		3*binary.MaxVarintLen64 + 1 +
		lenPrefix + MaxPubKey +
		lenPrefix + MaxSig
)

// Compile-time checks: MaxEncoded stays within 20 KiB, and every limit fits
// a lenPrefix-byte uvarint.
const (
	_ = uint(20<<10 - MaxEncoded)
	_ = uint(1<<(7*lenPrefix) - 1 - MaxValue)
	_ = uint(1<<(7*lenPrefix) - 1 - MaxKey)
	_ = uint(1<<(7*lenPrefix) - 1 - MaxPubKey)
	_ = uint(1<<(7*lenPrefix) - 1 - MaxSig)
)

// Errors, for errors.Is. The errors returned wrap one of these with the
// details.
var (
	// ErrExpired: the record's expiry is not after now.
	ErrExpired = errors.New("record expired")
	// ErrExpiryTooFar: the record expires more than MaxTTL+MaxClockSkew
	// after now.
	ErrExpiryTooFar = errors.New("record expiry too far in the future")
	// ErrBadSignature: the signature does not match the record and key.
	ErrBadSignature = errors.New("bad record signature")
	// ErrTooLarge: a field, or the encoding, exceeds its limit.
	ErrTooLarge = errors.New("record too large")
	// ErrMalformed: the record or its encoding is not well formed: an
	// unknown kind or version, an empty key, a bad public key, truncated
	// or trailing bytes.
	ErrMalformed = errors.New("malformed record")
	// ErrOwned: the key is held by another owner's live claim.
	ErrOwned = errors.New("key owned by another peer")
)

// Record is one signed statement. Key, Value, PubKey and Sig must not be
// modified after signing (doing so makes Verify fail).
type Record struct {
	Kind    Kind
	Key     []byte
	Value   []byte
	Seq     uint64
	Expires int64 // unix nanoseconds; the record is valid while now < Expires
	// Claimed is when the owner first claimed Key (unix nanoseconds),
	// the same in all its updates; 0 for provider records and for value
	// records of encoding version 1, which can never win a contest.
	Claimed int64
	// Released marks a value record as its owner's release of the key:
	// it replaces the owner's earlier records, and anyone may claim the
	// key at once.
	Released bool
	PubKey   []byte // crypto.MarshalPublicKey of the publisher
	Sig      []byte
}

// Signature domains separate record signatures from anything else signed
// with the same key; version 2 covers the claim time and the flags too.
const (
	signDomain   = "peer-record-v1\x00"
	signDomainV2 = "peer-record-v2\x00"
)

// flagReleased is the flags bit of Released.
const flagReleased = 1

// v2 says whether r needs encoding version 2: a record with neither a
// claim time nor a flag has exactly one encoding, version 1's.
func (r *Record) v2() bool { return r.Claimed != 0 || r.Released }

func (r *Record) flags() byte {
	if r.Released {
		return flagReleased
	}
	return 0
}

// signedBytes is the canonical encoding that the signature covers.
func (r *Record) signedBytes() []byte {
	b := make([]byte, 0, len(signDomainV2)+1+2*binary.MaxVarintLen64+len(r.Key)+len(r.Value)+25)
	if r.v2() {
		b = append(b, signDomainV2...)
	} else {
		b = append(b, signDomain...)
	}
	b = append(b, byte(r.Kind))
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	b = binary.AppendUvarint(b, uint64(len(r.Value)))
	b = append(b, r.Value...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires))
	if r.v2() {
		b = binary.BigEndian.AppendUint64(b, uint64(r.Claimed))
		b = append(b, r.flags())
	}
	return b
}

// checkFields checks kind and field sizes, the checks shared by New and
// Verify.
func checkFields(kind Kind, key, value []byte) error {
	if !kind.known() {
		return fmt.Errorf("record: unknown kind %d: %w", uint8(kind), ErrMalformed)
	}
	if len(key) == 0 {
		return fmt.Errorf("record: empty key: %w", ErrMalformed)
	}
	if len(key) > MaxKey {
		return fmt.Errorf("record: key of %d bytes, limit %d: %w", len(key), MaxKey, ErrTooLarge)
	}
	if len(value) > MaxValue {
		return fmt.Errorf("record: value of %d bytes, limit %d: %w", len(value), MaxValue, ErrTooLarge)
	}
	return nil
}

// New makes a record and signs it with priv. It checks the kind and the
// sizes of key and value, but not the expiry against a clock (Verify does).
func New(kind Kind, key, value []byte, seq uint64, expires time.Time, priv crypto.PrivKey) (*Record, error) {
	return sign(&Record{Kind: kind, Key: bytes.Clone(key), Value: cloneOrNil(value), Seq: seq}, expires, priv)
}

// NewClaim makes a value record of key that its owner first claimed at
// claimed (now, for a first claim; the first claim's time, for an update),
// and signs it with priv.
func NewClaim(key, value []byte, seq uint64, claimed, expires time.Time, priv crypto.PrivKey) (*Record, error) {
	if claimed.IsZero() || claimed.UnixNano() <= 0 {
		return nil, fmt.Errorf("record: no claim time: %w", ErrMalformed)
	}
	return sign(&Record{Kind: KindValue, Key: bytes.Clone(key), Value: cloneOrNil(value), Seq: seq, Claimed: claimed.UnixNano()}, expires, priv)
}

// NewRelease makes the owner's release of key, of a higher seq than its
// last record, and signs it with priv. It lives until expires, so that
// replicas that held the claim hear of the release.
func NewRelease(key []byte, seq uint64, claimed, expires time.Time, priv crypto.PrivKey) (*Record, error) {
	if claimed.IsZero() || claimed.UnixNano() <= 0 {
		return nil, fmt.Errorf("record: no claim time: %w", ErrMalformed)
	}
	return sign(&Record{Kind: KindValue, Key: bytes.Clone(key), Seq: seq, Claimed: claimed.UnixNano(), Released: true}, expires, priv)
}

// sign checks r, sets its expiry and public key, and signs it.
func sign(r *Record, expires time.Time, priv crypto.PrivKey) (*Record, error) {
	if err := checkFields(r.Kind, r.Key, r.Value); err != nil {
		return nil, err
	}
	if expires.IsZero() {
		return nil, fmt.Errorf("record: no expiry: %w", ErrMalformed)
	}
	if priv == nil {
		return nil, errors.New("record: no private key")
	}
	pub, err := crypto.MarshalPublicKey(priv.GetPublic())
	if err != nil {
		return nil, fmt.Errorf("record: marshal public key: %w", err)
	}
	if len(pub) > MaxPubKey {
		return nil, fmt.Errorf("record: public key of %d bytes, limit %d: %w", len(pub), MaxPubKey, ErrTooLarge)
	}
	r.Expires, r.PubKey = expires.UnixNano(), pub
	if err := r.checkClaim(); err != nil {
		return nil, err
	}
	sig, err := priv.Sign(r.signedBytes())
	if err != nil {
		return nil, fmt.Errorf("record: sign: %w", err)
	}
	if len(sig) > MaxSig {
		return nil, fmt.Errorf("record: signature of %d bytes, limit %d: %w", len(sig), MaxSig, ErrTooLarge)
	}
	r.Sig = sig
	return r, nil
}

// checkClaim checks the claim time and flags against the kind and the
// expiry (not against a clock).
func (r *Record) checkClaim() error {
	if !r.v2() {
		return nil
	}
	if r.Kind != KindValue {
		return fmt.Errorf("record: a %s record with a claim time or flags: %w", r.Kind, ErrMalformed)
	}
	if r.Claimed <= 0 {
		return fmt.Errorf("record: claim time %d: %w", r.Claimed, ErrMalformed)
	}
	if r.Claimed >= r.Expires {
		return fmt.Errorf("record: claimed after it expires: %w", ErrMalformed)
	}
	return nil
}

// Verify checks that r is well formed, within the limits, unexpired at now,
// not expiring more than MaxTTL+MaxClockSkew after now, and signed by the
// key it carries. The public key must be in canonical form (as
// crypto.MarshalPublicKey writes it), so that one record has one encoding.
func (r *Record) Verify(now time.Time) error {
	if err := checkFields(r.Kind, r.Key, r.Value); err != nil {
		return err
	}
	if n := now.UnixNano(); r.Expires <= n {
		return fmt.Errorf("record: expired %v ago: %w", span(n, r.Expires), ErrExpired)
	}
	if limit := now.Add(MaxTTL + MaxClockSkew).UnixNano(); r.Expires > limit {
		return fmt.Errorf("record: expires in %v, limit %v: %w",
			span(r.Expires, now.UnixNano()), MaxTTL+MaxClockSkew, ErrExpiryTooFar)
	}
	if err := r.checkClaim(); err != nil {
		return err
	}
	if limit := now.Add(MaxClockSkew).UnixNano(); r.Claimed > limit {
		return fmt.Errorf("record: claimed %v in the future: %w", span(r.Claimed, now.UnixNano()), ErrMalformed)
	}
	if len(r.PubKey) > MaxPubKey {
		return fmt.Errorf("record: public key of %d bytes, limit %d: %w", len(r.PubKey), MaxPubKey, ErrTooLarge)
	}
	pub, err := r.publicKey()
	if err != nil {
		return err
	}
	if len(r.Sig) > MaxSig {
		return fmt.Errorf("record: signature of %d bytes, limit %d: %w", len(r.Sig), MaxSig, ErrTooLarge)
	}
	if len(r.Sig) == 0 {
		return fmt.Errorf("record: no signature: %w", ErrBadSignature)
	}
	ok, err := pub.Verify(r.signedBytes(), r.Sig)
	if err != nil {
		return fmt.Errorf("record: %w: %v", ErrBadSignature, err)
	}
	if !ok {
		return fmt.Errorf("record: signature does not match: %w", ErrBadSignature)
	}
	return r.checkMailbox()
}

// span is a-b for a >= b, saturated rather than overflowing.
func span(a, b int64) time.Duration {
	if d := a - b; d >= 0 {
		return time.Duration(d)
	}
	return time.Duration(1<<63 - 1)
}

// publicKey parses PubKey and insists on its canonical encoding.
func (r *Record) publicKey() (crypto.PubKey, error) {
	if len(r.PubKey) == 0 {
		return nil, fmt.Errorf("record: no public key: %w", ErrMalformed)
	}
	pub, err := crypto.UnmarshalPublicKey(r.PubKey)
	if err != nil {
		return nil, fmt.Errorf("record: bad public key: %v: %w", err, ErrMalformed)
	}
	canon, err := crypto.MarshalPublicKey(pub)
	if err != nil || !bytes.Equal(canon, r.PubKey) {
		return nil, fmt.Errorf("record: bad public key: not in canonical form: %w", ErrMalformed)
	}
	return pub, nil
}

// Publisher is the peer ID of the key that signed r (it does not check the
// signature).
func (r *Record) Publisher() (peer.ID, error) {
	pub, err := r.publicKey()
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("record: peer ID from public key: %w", err)
	}
	return id, nil
}

// ChordID is the key's position on the ring: SHA-1 of the key.
func (r *Record) ChordID() chord.ID { return chord.HashID(r.Key) }

// StoreKey is what the record is filed under: ChordID (20 bytes), then the
// kind (1 byte), then for a provider record the publisher's peer ID bytes,
// for a mail record the publisher's peer ID bytes and Seq (8 bytes, big
// endian), and for an acknowledgement the sender's peer ID bytes (its
// value). Sorting by StoreKey sorts by ring position, and a mailbox's
// messages by sender and Seq. It is meant for records that pass Verify: if
// a public key does not parse, the peer ID part is left out.
func (r *Record) StoreKey() []byte {
	id := r.ChordID()
	sk := make([]byte, 0, chord.IDBytes+1+48)
	sk = append(sk, id[:]...)
	sk = append(sk, byte(r.Kind))
	switch r.Kind {
	case KindProvider, KindMail:
		if p, err := r.Publisher(); err == nil {
			sk = append(sk, p...)
		}
		if r.Kind == KindMail {
			sk = binary.BigEndian.AppendUint64(sk, r.Seq)
		}
	case KindMailAck:
		sk = append(sk, r.Value...)
	}
	return sk
}

// storePrefix is the StoreKey prefix shared by all records of kind for key.
func storePrefix(key []byte, kind Kind) []byte {
	id := chord.HashID(key)
	return append(id[:], byte(kind))
}

// Encoding versions, the first byte of Marshal's output. Version 2 adds
// the claim time and the flags; a record without either is written as
// version 1, so that every record has one encoding.
const (
	codecVersion   = 1
	codecVersionV2 = 2
)

// Marshal encodes r: a version byte, the kind byte, then key and value
// (uvarint length, bytes), Seq (uvarint), Expires (zig-zag varint), in
// version 2 Claimed (zig-zag varint) and a flags byte, then PubKey and Sig
// (uvarint length, bytes).
func (r *Record) Marshal() []byte {
	n := 3 + 4*binary.MaxVarintLen64 + len(r.Key) + len(r.Value) +
		3*binary.MaxVarintLen64 + len(r.PubKey) + len(r.Sig)
	b := make([]byte, 0, n)
	if r.v2() {
		b = append(b, codecVersionV2, byte(r.Kind))
	} else {
		b = append(b, codecVersion, byte(r.Kind))
	}
	b = appendBytes(b, r.Key)
	b = appendBytes(b, r.Value)
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.Expires)
	if r.v2() {
		b = binary.AppendVarint(b, r.Claimed)
		b = append(b, r.flags())
	}
	b = appendBytes(b, r.PubKey)
	b = appendBytes(b, r.Sig)
	return b
}

func appendBytes(b, field []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(field)))
	return append(b, field...)
}

// Unmarshal decodes what Marshal wrote. It refuses an unknown version,
// truncated input, trailing bytes, non-minimal varints and fields over
// their limits (before allocating them), so every accepted input is exactly
// what Marshal writes for the result. It does not check the kind, the
// expiry or the signature: call Verify. The result does not alias b.
func Unmarshal(b []byte) (*Record, error) {
	if len(b) > MaxEncoded {
		return nil, fmt.Errorf("record: encoding of %d bytes, limit %d: %w", len(b), MaxEncoded, ErrTooLarge)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("record: empty encoding: %w", ErrMalformed)
	}
	if b[0] != codecVersion && b[0] != codecVersionV2 {
		return nil, fmt.Errorf("record: unknown encoding version %d: %w", b[0], ErrMalformed)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("record: truncated before kind: %w", ErrMalformed)
	}
	d := decoder{buf: b}
	r := &Record{Kind: Kind(b[1])}
	d.off = 2
	r.Key = d.bytes("key", MaxKey)
	r.Value = d.bytes("value", MaxValue)
	r.Seq = d.uvarint("seq")
	r.Expires = d.varint("expiry")
	if b[0] == codecVersionV2 {
		r.Claimed = d.varint("claim time")
		switch f := d.byte("flags"); {
		case d.err != nil:
		case f&^flagReleased != 0:
			d.err = fmt.Errorf("record: unknown flags %#x: %w", f, ErrMalformed)
		default:
			r.Released = f&flagReleased != 0
		}
		if d.err == nil && !r.v2() {
			d.err = fmt.Errorf("record: version 2 encoding of a version 1 record: %w", ErrMalformed)
		}
	}
	r.PubKey = d.bytes("public key", MaxPubKey)
	r.Sig = d.bytes("signature", MaxSig)
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(b) {
		return nil, fmt.Errorf("record: %d trailing bytes: %w", len(b)-d.off, ErrMalformed)
	}
	return r, nil
}

// decoder reads fields in order; after the first error it reads nothing and
// keeps that error.
type decoder struct {
	buf []byte
	off int
	err error
}

// uvarint reads a minimally encoded uvarint.
func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if d.off+i >= len(d.buf) {
			d.err = fmt.Errorf("record: truncated in %s: %w", what, ErrMalformed)
			return 0
		}
		c := d.buf[d.off+i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break // overflows 64 bits
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				d.err = fmt.Errorf("record: non-minimal varint in %s: %w", what, ErrMalformed)
				return 0
			}
			d.off += i + 1
			return x
		}
	}
	d.err = fmt.Errorf("record: varint overflows 64 bits in %s: %w", what, ErrMalformed)
	return 0
}

// varint reads a minimally encoded zig-zag varint.
func (d *decoder) varint(what string) int64 {
	ux := d.uvarint(what)
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// byte reads one byte.
func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.buf) {
		d.err = fmt.Errorf("record: truncated in %s: %w", what, ErrMalformed)
		return 0
	}
	d.off++
	return d.buf[d.off-1]
}

// bytes reads a length-prefixed field of at most limit bytes, copying it;
// an empty field is nil.
func (d *decoder) bytes(what string, limit int) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.err = fmt.Errorf("record: %s of %d bytes, limit %d: %w", what, n, limit, ErrTooLarge)
		return nil
	}
	if n > uint64(len(d.buf)-d.off) {
		d.err = fmt.Errorf("record: truncated in %s (%d bytes declared, %d left): %w",
			what, n, len(d.buf)-d.off, ErrMalformed)
		return nil
	}
	field := cloneOrNil(d.buf[d.off : d.off+int(n)])
	d.off += int(n)
	return field
}

func cloneOrNil(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return bytes.Clone(b)
}

// Replaces reports whether r should replace old, both verified records
// under one StoreKey, at now. When it should not because old is another
// owner's live claim, the error wraps ErrOwned and says whose; an older
// or equal record of the same publisher is (false, nil), so that the same
// record may arrive from several replicas in any order.
func Replaces(r, old *Record, now time.Time) (bool, error) {
	switch {
	case expired(old, now):
		return true, nil
	case r.Kind == KindProvider || r.Kind.mailbox() || bytes.Equal(r.PubKey, old.PubKey):
		return r.Seq > old.Seq, nil
	case old.Released:
		return true, nil // a released key is anyone's
	case !r.Released && sameMoment(r, old, now) && earlier(r, old):
		return true, nil
	}
	owner, _ := old.Publisher()
	return false, fmt.Errorf("record: %q is held by %s until %s: %w",
		old.Key, owner, time.Unix(0, old.Expires).UTC().Format(time.RFC3339), ErrOwned)
}

// sameMoment says whether two claims were both made within ClaimWindow of
// now (old was claimed no earlier than r, or r would not win anyway).
func sameMoment(r, old *Record, now time.Time) bool {
	floor := now.Add(-ClaimWindow).UnixNano()
	return r.Claimed > 0 && old.Claimed > 0 && r.Claimed >= floor && old.Claimed >= floor
}

// earlier orders two claims of one key: by claim time, then by the
// SHA-256 of the owner's public key, the same on every replica.
func earlier(a, b *Record) bool {
	if a.Claimed != b.Claimed {
		return a.Claimed < b.Claimed
	}
	ha, hb := sha256.Sum256(a.PubKey), sha256.Sum256(b.PubKey)
	return bytes.Compare(ha[:], hb[:]) < 0
}

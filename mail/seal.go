// Package mail seals store-and-forward messages to their recipient and
// keeps a peer's inbox and outbox.
//
// A message travels as a record.KindMail record: signed by the sender,
// filed in the recipient's mailbox (record.MailboxKey), its value sealed
// with an anonymous NaCl box to the X25519 form of the recipient's
// Ed25519 peer key, so that the replicas holding it cannot read it. The
// record's Seq orders one sender's messages; the sealed body names the
// previous message's Seq, so that the recipient knows when it holds every
// message of a sender up to some Seq, and only then acknowledges them.
package mail

import (
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"filippo.io/edwards25519"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/box"

	"github.com/peer-overlay/peer/dht/record"
)

// Limits.
const (
	// MaxBody is the most text plus file data a message carries: the
	// sealed body must fit a record's value. Larger files go by the swarm
	// (`peer share`, then send the magnet).
	MaxBody = 11 << 10
	// MaxFileName bounds a file name.
	MaxFileName = 255
	// DefaultTTL is how long a message waits for its recipient.
	DefaultTTL = 7 * 24 * time.Hour
	// MaxTTL is the longest wait a message may ask for.
	MaxTTL = record.MaxTTL
)

// sealVersion is the first byte of a sealed value.
const sealVersion = 1

// Errors for errors.Is.
var (
	ErrTooLarge = errors.New("message too large")
	ErrNotForUs = errors.New("message not for this peer")
	ErrBadSeal  = errors.New("message does not open")
)

// Message is what a sender writes: text, a file, or both.
type Message struct {
	Text     string
	FileName string
	Data     []byte
}

// Check refuses an empty or oversized message.
func (m Message) Check() error {
	if m.Text == "" && m.FileName == "" && len(m.Data) == 0 {
		return errors.New("mail: an empty message")
	}
	if n := len(m.Text) + len(m.Data); n > MaxBody {
		return fmt.Errorf("mail: %d bytes of text and file, limit %d (send larger files with `peer share` and their magnet): %w", n, MaxBody, ErrTooLarge)
	}
	if len(m.FileName) > MaxFileName {
		return fmt.Errorf("mail: a file name of %d bytes, limit %d: %w", len(m.FileName), MaxFileName, ErrTooLarge)
	}
	return nil
}

// body is the sealed plaintext.
type body struct {
	V    int    `json:"v"`
	To   string `json:"to"`
	Sent int64  `json:"sent"` // unix ns
	Prev uint64 `json:"prev,omitempty"`
	Text string `json:"text,omitempty"`
	File string `json:"file,omitempty"`
	Data []byte `json:"data,omitempty"`
}

// ID names one message of a sender: the first 16 bytes of SHA-256 of the
// sender's peer ID and the Seq, in hex.
func ID(from peer.ID, seq uint64) string {
	h := sha256.New()
	h.Write([]byte(from))
	h.Write(binary.BigEndian.AppendUint64(nil, seq))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Seal makes the mail record of m from priv's peer to to: the sender's
// seq-th message, following its message prev (0: none), sent at sent and
// held until expires.
func Seal(priv crypto.PrivKey, to peer.ID, m Message, seq, prev uint64, sent, expires time.Time) (*record.Record, error) {
	if err := m.Check(); err != nil {
		return nil, err
	}
	pub, err := boxPublic(to)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(body{V: 1, To: to.String(), Sent: sent.UnixNano(), Prev: prev, Text: m.Text, File: m.FileName, Data: m.Data})
	if err != nil {
		return nil, err
	}
	sealed, err := box.SealAnonymous([]byte{sealVersion}, plain, pub, crand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mail: sealing: %w", err)
	}
	if len(sealed) > record.MaxValue {
		return nil, fmt.Errorf("mail: sealed message of %d bytes, limit %d: %w", len(sealed), record.MaxValue, ErrTooLarge)
	}
	return record.New(record.KindMail, record.MailboxKey(to), sealed, seq, expires, priv)
}

// Delivered is an opened message.
type Delivered struct {
	ID      string
	From    peer.ID
	Seq     uint64
	Prev    uint64
	Sent    time.Time
	Expires time.Time
	Message
}

// Open checks rec, a mail record, at now: signed by its sender, in the
// mailbox of priv's peer and sealed to it. It returns the message.
func Open(priv crypto.PrivKey, rec *record.Record, now time.Time) (*Delivered, error) {
	if rec.Kind != record.KindMail {
		return nil, fmt.Errorf("mail: a %s record is not a message: %w", rec.Kind, ErrBadSeal)
	}
	if err := rec.Verify(now); err != nil {
		return nil, fmt.Errorf("mail: %w", err)
	}
	self, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	owner, err := record.MailboxOwner(rec.Key)
	if err != nil {
		return nil, err
	}
	if owner != self {
		return nil, fmt.Errorf("mail: a message in %s's mailbox: %w", owner, ErrNotForUs)
	}
	from, err := rec.Publisher()
	if err != nil {
		return nil, err
	}
	if len(rec.Value) == 0 || rec.Value[0] != sealVersion {
		return nil, fmt.Errorf("mail: unknown seal version: %w", ErrBadSeal)
	}
	pub, sec, err := boxKeys(priv)
	if err != nil {
		return nil, err
	}
	plain, ok := box.OpenAnonymous(nil, rec.Value[1:], pub, sec)
	if !ok {
		return nil, fmt.Errorf("mail: from %s: %w", from, ErrBadSeal)
	}
	var b body
	if err := json.Unmarshal(plain, &b); err != nil {
		return nil, fmt.Errorf("mail: from %s: the sealed body does not decode: %v: %w", from, err, ErrBadSeal)
	}
	if b.V != 1 {
		return nil, fmt.Errorf("mail: from %s: body version %d: %w", from, b.V, ErrBadSeal)
	}
	if b.To != self.String() {
		return nil, fmt.Errorf("mail: from %s: sealed for %q: %w", from, b.To, ErrNotForUs)
	}
	d := &Delivered{
		ID: ID(from, rec.Seq), From: from, Seq: rec.Seq, Prev: b.Prev,
		Sent: time.Unix(0, b.Sent), Expires: time.Unix(0, rec.Expires),
		Message: Message{Text: b.Text, FileName: b.File, Data: b.Data},
	}
	if err := d.Check(); err != nil {
		return nil, err
	}
	return d, nil
}

// boxPublic is the X25519 public key of an Ed25519 peer ID.
func boxPublic(id peer.ID) (*[32]byte, error) {
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("mail: %s holds no public key to seal to: %w", id, err)
	}
	if pk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("mail: %s has a %s key; messages are sealed to Ed25519 keys", id, pk.Type())
	}
	raw, err := pk.Raw()
	if err != nil {
		return nil, err
	}
	p, err := new(edwards25519.Point).SetBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("mail: %s: a bad Ed25519 key: %w", id, err)
	}
	var out [32]byte
	copy(out[:], p.BytesMontgomery())
	return &out, nil
}

// boxKeys is the X25519 key pair of an Ed25519 private key: the clamped
// scalar Ed25519 derives from its seed, and its public point.
func boxKeys(priv crypto.PrivKey) (pub, sec *[32]byte, err error) {
	if priv.Type() != crypto.Ed25519 {
		return nil, nil, fmt.Errorf("mail: a %s key; messages are sealed to Ed25519 keys", priv.Type())
	}
	raw, err := priv.Raw()
	if err != nil {
		return nil, nil, err
	}
	h := sha512.Sum512(raw[:ed25519.SeedSize])
	sec = new([32]byte)
	copy(sec[:], h[:32])
	sec[0] &= 248
	sec[31] &= 127
	sec[31] |= 64
	p, err := curve25519.X25519(sec[:], curve25519.Basepoint)
	if err != nil {
		return nil, nil, err
	}
	pub = new([32]byte)
	copy(pub[:], p)
	return pub, sec, nil
}

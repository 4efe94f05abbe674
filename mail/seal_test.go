package mail

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/record"
)

func key(t testing.TB, seed uint64) (crypto.PrivKey, peer.ID) {
	t.Helper()
	var s [32]byte
	s[0] = byte(seed)
	priv, _, err := crypto.GenerateEd25519Key(rand.NewChaCha8(s))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, id
}

func TestSealOpen(t *testing.T) {
	sender, from := key(t, 1)
	recipient, to := key(t, 2)
	stranger, _ := key(t, 3)
	now := time.Now()
	m := Message{Text: "hello", FileName: "a.txt", Data: []byte("file bytes")}
	rec, err := Seal(sender, to, m, 7, 5, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(rec.Value, []byte("hello")) || bytes.Contains(rec.Value, []byte("file bytes")) {
		t.Fatal("the sealed value holds the text in the clear")
	}
	d, err := Open(recipient, rec, now)
	if err != nil {
		t.Fatal(err)
	}
	if d.From != from || d.Seq != 7 || d.Prev != 5 || d.Text != "hello" || d.FileName != "a.txt" || string(d.Data) != "file bytes" || d.ID != ID(from, 7) {
		t.Fatalf("opened %+v", d)
	}
	// Another peer cannot open it, nor claim it is in its mailbox.
	if _, err := Open(stranger, rec, now); !errors.Is(err, ErrNotForUs) {
		t.Fatalf("a stranger opened it: %v", err)
	}
	// A changed byte breaks the signature.
	bad := *rec
	bad.Value = bytes.Clone(rec.Value)
	bad.Value[10] ^= 1
	if _, err := Open(recipient, &bad, now); !errors.Is(err, record.ErrBadSignature) {
		t.Fatalf("a changed message opened: %v", err)
	}
	// Sealed to one peer, filed (and signed) in another's mailbox: the
	// recipient of the mailbox cannot open it.
	other, err := Seal(sender, to, m, 8, 7, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, strangerID := key(t, 3)
	moved, err := record.New(record.KindMail, record.MailboxKey(strangerID), other.Value, 8, now.Add(time.Hour), sender)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(stranger, moved, now); !errors.Is(err, ErrBadSeal) {
		t.Fatalf("a message sealed for another peer opened: %v", err)
	}
}

func TestSealRefusesBadMessages(t *testing.T) {
	sender, _ := key(t, 1)
	_, to := key(t, 2)
	now := time.Now()
	for name, m := range map[string]Message{
		"empty":     {},
		"oversized": {Text: strings.Repeat("x", MaxBody+1)},
		"long name": {FileName: strings.Repeat("n", MaxFileName+1), Data: []byte("x")},
	} {
		if _, err := Seal(sender, to, m, 1, 0, now, now.Add(time.Hour)); err == nil {
			t.Errorf("%s: sealed", name)
		}
	}
	// The largest message fits a record.
	if _, err := Seal(sender, to, Message{Data: bytes.Repeat([]byte{0xff}, MaxBody)}, 1, 0, now, now.Add(time.Hour)); err != nil {
		t.Errorf("a message of MaxBody bytes: %v", err)
	}
}

// Open takes any record a peer hands over; it opens or refuses, and never
// panics.
func FuzzOpen(f *testing.F) {
	sender, _ := key(f, 1)
	recipient, to := key(f, 2)
	now := time.Unix(1_800_000_000, 0)
	rec, err := Seal(sender, to, Message{Text: "hi"}, 1, 0, now, now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec.Marshal())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := record.Unmarshal(b)
		if err != nil {
			return
		}
		d, err := Open(recipient, r, now)
		if err == nil && (d.Check() != nil || d.From == "") {
			t.Fatalf("opened an invalid message: %+v", d)
		}
	})
}

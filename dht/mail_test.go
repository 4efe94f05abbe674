package dht

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/record"
)

// A mailbox on a real ring: messages left by a sender are on every
// replica and come back from any peer in batches; the owner's
// acknowledgement deletes those it covers everywhere.
func TestMailboxOnTheRing(t *testing.T) {
	nodes := startRing(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	owner, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	sender, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	ownerID, _ := peer.IDFromPrivateKey(owner)
	senderID, _ := peer.IDFromPrivateKey(sender)
	box := record.MailboxKey(ownerID)
	const count = 600
	exp := time.Now().Add(time.Hour)
	value := make([]byte, 300) // about the size of a short sealed message
	for seq := uint64(1); seq <= count; seq++ {
		rec, err := record.New(record.KindMail, box, value, seq, exp, sender)
		if err != nil {
			t.Fatal(err)
		}
		held, asked, err := nodes[1].dht.StoreMail(ctx, rec, 3)
		if err != nil || len(held) != asked || asked != 3 {
			t.Fatalf("message %d: held by %d of %d (%v)", seq, len(held), asked, err)
		}
	}
	got, err := nodes[2].dht.Mailbox(ctx, box, record.KindMail)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxBatch {
		t.Fatalf("a mailbox of %d messages returned %d, want a batch of %d", count, len(got), maxBatch)
	}
	for i, c := range got {
		if c.Record.Seq != uint64(i+1) || len(c.Holders) != 3 {
			t.Fatalf("message %d: seq %d, %d holders", i, c.Record.Seq, len(c.Holders))
		}
	}
	ack, err := record.New(record.KindMailAck, box, []byte(senderID), maxBatch, exp, owner)
	if err != nil {
		t.Fatal(err)
	}
	if held, _, err := nodes[0].dht.StoreMail(ctx, ack, 3); err != nil || len(held) != 3 {
		t.Fatalf("acknowledgement held by %d (%v)", len(held), err)
	}
	got, err = nodes[2].dht.Mailbox(ctx, box, record.KindMail)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != maxBatch || got[0].Record.Seq != maxBatch+1 {
		t.Fatalf("after acknowledging %d: %d messages from seq %d", maxBatch, len(got), got[0].Record.Seq)
	}
}

// A peer that floods mailboxes is refused past its burst, whether it
// signs the messages itself or with keys made for the flood; another
// peer is not held back by it.
func TestMailFloodsAreRefused(t *testing.T) {
	d := &DHT{}
	flooder, _, _ := crypto.GenerateEd25519Key(nil)
	flooderID, _ := peer.IDFromPrivateKey(flooder)
	throwaway, _, _ := crypto.GenerateEd25519Key(nil)
	owner, _, _ := crypto.GenerateEd25519Key(nil)
	ownerID, _ := peer.IDFromPrivateKey(owner)
	now := time.Now()
	batch := func(k crypto.PrivKey, n int) []*record.Record {
		rec, err := record.New(record.KindMail, record.MailboxKey(ownerID), []byte("x"), 1, now.Add(time.Hour), k)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]*record.Record, n)
		for i := range out {
			out[i] = rec
		}
		return out
	}
	if err := d.mailLimit(flooderID, batch(flooder, mailBurst), now); err != nil {
		t.Fatalf("a burst of its own messages: %v", err)
	}
	if err := d.mailLimit(flooderID, batch(flooder, 1), now); !errors.Is(err, ErrMailRate) {
		t.Fatalf("one more of its own at once: %v, want ErrMailRate", err)
	}
	if err := d.mailLimit(flooderID, batch(throwaway, mailPassBurst), now); err != nil {
		t.Fatalf("a burst of messages passed on: %v", err)
	}
	if err := d.mailLimit(flooderID, batch(throwaway, 1), now); !errors.Is(err, ErrMailRate) {
		t.Fatalf("one more passed on at once: %v, want ErrMailRate", err)
	}
	other, _, _ := crypto.GenerateEd25519Key(nil)
	otherID, _ := peer.IDFromPrivateKey(other)
	if err := d.mailLimit(otherID, batch(other, 10), now); err != nil {
		t.Fatalf("another peer, held back by the flooder: %v", err)
	}
	if err := d.mailLimit(flooderID, batch(flooder, mailRate), now.Add(time.Second)); err != nil {
		t.Fatalf("a second later, a second's worth: %v", err)
	}
}

package dht

import (
	"context"
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

package record

import (
	"errors"
	"testing"
	"time"
)

func TestMailboxKeys(t *testing.T) {
	owner := idOf(t, testKey(t, 1))
	got, err := MailboxOwner(MailboxKey(owner))
	if err != nil || got != owner {
		t.Fatalf("MailboxOwner(MailboxKey(%s)) = %s, %v", owner, got, err)
	}
	for _, bad := range []string{"name:web", "mbox:", "mbox:not-a-peer", "mbox:" + owner.String() + "x"} {
		if _, err := MailboxOwner([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("MailboxOwner(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestMailRecordRules(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	exp := now.Add(time.Hour)
	sender, owner, stranger := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	box := MailboxKey(idOf(t, owner))
	// A message anywhere but in a mailbox is refused.
	if r, err := New(KindMail, []byte("name:web"), []byte("sealed"), 1, exp, sender); err == nil {
		if err := r.Verify(now); !errors.Is(err, ErrMalformed) {
			t.Errorf("a message filed under a name: Verify = %v, want ErrMalformed", err)
		}
	}
	m1, _ := New(KindMail, box, []byte("one"), 1, exp, sender)
	m2, _ := New(KindMail, box, []byte("two"), 2, exp, sender)
	if err := m1.Verify(now); err != nil {
		t.Fatal(err)
	}
	if string(m1.StoreKey()) == string(m2.StoreKey()) {
		t.Fatal("two messages of one sender share a StoreKey")
	}
	// Only the mailbox's owner acknowledges.
	forged, _ := New(KindMailAck, box, []byte(idOf(t, sender)), 2, exp, stranger)
	if err := forged.Verify(now); !errors.Is(err, ErrMalformed) {
		t.Errorf("an acknowledgement signed by a stranger: Verify = %v, want ErrMalformed", err)
	}
	noSender, _ := New(KindMailAck, box, []byte("nobody"), 2, exp, owner)
	if err := noSender.Verify(now); !errors.Is(err, ErrMalformed) {
		t.Errorf("an acknowledgement naming no sender: Verify = %v, want ErrMalformed", err)
	}
}

func TestStoreDropsAcknowledgedMail(t *testing.T) {
	s, _ := openStore(t)
	now := time.Now()
	exp := now.Add(time.Hour)
	sender, other, owner := testKey(t, 1), testKey(t, 4), testKey(t, 2)
	box := MailboxKey(idOf(t, owner))
	for seq := uint64(1); seq <= 3; seq++ {
		r, _ := New(KindMail, box, []byte{byte(seq)}, seq, exp, sender)
		if ok, err := s.Put(r, now); !ok || err != nil {
			t.Fatalf("put message %d: %v %v", seq, ok, err)
		}
	}
	o, _ := New(KindMail, box, []byte("other"), 1, exp, other)
	if ok, err := s.Put(o, now); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// The same message again changes nothing and is no error.
	again, _ := New(KindMail, box, []byte{1}, 1, exp, sender)
	if ok, err := s.Put(again, now); ok || err != nil {
		t.Fatalf("the same message again: %v %v, want (false, nil)", ok, err)
	}
	ack, _ := New(KindMailAck, box, []byte(idOf(t, sender)), 2, exp, owner)
	if ok, err := s.Put(ack, now); !ok || err != nil {
		t.Fatal(ok, err)
	}
	mail, err := s.Mailbox(box, KindMail, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	var left []uint64
	for _, r := range mail {
		left = append(left, r.Seq)
	}
	if len(mail) != 2 || mail[0].Seq != 3 && mail[1].Seq != 3 {
		t.Fatalf("after acknowledging the sender's messages up to 2 the mailbox holds seqs %v, want 3 and the other sender's 1", left)
	}
	// An acknowledged message that comes back (from a replica that missed
	// the acknowledgement) is not stored again.
	old, _ := New(KindMail, box, []byte{2}, 2, exp, sender)
	if ok, err := s.Put(old, now); ok || err != nil {
		t.Fatalf("an acknowledged message again: %v %v, want (false, nil)", ok, err)
	}
	acks, err := s.Mailbox(box, KindMailAck, now, 0)
	if err != nil || len(acks) != 1 || acks[0].Seq != 2 {
		t.Fatalf("acknowledgements: %v %v", acks, err)
	}
}

func TestStoreCapsOneSendersMail(t *testing.T) {
	defer func(n int) { heldCap = n }(heldCap)
	heldCap = 50
	s, _ := openStore(t)
	now := time.Now()
	exp := now.Add(time.Hour)
	sender, owner := testKey(t, 1), testKey(t, 2)
	box := MailboxKey(idOf(t, owner))
	for seq := uint64(1); seq <= uint64(heldCap); seq++ {
		r, _ := New(KindMail, box, nil, seq, exp, sender)
		if _, err := s.Put(r, now); err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
	}
	r, _ := New(KindMail, box, nil, uint64(heldCap)+1, exp, sender)
	if ok, err := s.Put(r, now); ok || !errors.Is(err, ErrMailboxFull) {
		t.Fatalf("message %d of one sender: %v %v, want ErrMailboxFull", heldCap+1, ok, err)
	}
	// Another sender still has room.
	o, _ := New(KindMail, box, nil, 1, exp, testKey(t, 5))
	if ok, err := s.Put(o, now); !ok || err != nil {
		t.Fatalf("another sender's message in a mailbox one sender filled: %v %v", ok, err)
	}
}

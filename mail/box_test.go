package mail

import (
	"path/filepath"
	"testing"
	"time"
)

func openBox(t *testing.T) *Box {
	t.Helper()
	b, err := OpenBox(filepath.Join(t.TempDir(), "mail.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// A second copy of a message is dropped; what may be acknowledged stops
// at a gap in a sender's messages until the missing one comes.
func TestBoxDedupAndChains(t *testing.T) {
	b := openBox(t)
	_, from := key(t, 1)
	now := time.Now()
	// Seqs are clock readings.
	base := uint64(now.UnixNano())
	msg := func(seq, prev uint64) *Delivered {
		seq += base
		if prev != 0 {
			prev += base
		}
		return &Delivered{ID: ID(from, seq), From: from, Seq: seq, Prev: prev, Sent: now, Message: Message{Text: "m"}}
	}
	deliver := func(d *Delivered, wantFresh bool) {
		t.Helper()
		_, fresh, err := b.Deliver(d, "mailbox", nil, now)
		if err != nil || fresh != wantFresh {
			t.Fatalf("Deliver(seq %d) = fresh %v, %v; want fresh %v", d.Seq, fresh, err, wantFresh)
		}
	}
	upto := func(want uint64) {
		t.Helper()
		acks, err := b.ToAck()
		if err != nil {
			t.Fatal(err)
		}
		if want != 0 {
			want += base
		}
		if got := acks[from]; got != want {
			t.Fatalf("may acknowledge up to %d, want %d", got, want)
		}
	}
	deliver(msg(10, 0), true)
	deliver(msg(10, 0), false) // the copy from another replica
	upto(10)
	deliver(msg(30, 20), true) // 20 has not come
	upto(10)
	deliver(msg(20, 10), true) // it has now: the chain runs to 30
	upto(30)
	if err := b.Acked(from, base+30); err != nil {
		t.Fatal(err)
	}
	upto(0) // nothing new to acknowledge
	// A predecessor too old to still be held counts as come.
	old := uint64(now.Add(-MaxTTL - time.Hour).UnixNano())
	_, from2 := key(t, 2)
	d := &Delivered{ID: ID(from2, uint64(now.UnixNano())), From: from2, Seq: uint64(now.UnixNano()), Prev: old, Sent: now, Message: Message{Text: "m"}}
	if _, _, err := b.Deliver(d, "direct", nil, now); err != nil {
		t.Fatal(err)
	}
	acks, _ := b.ToAck()
	if acks[from2] != d.Seq {
		t.Fatalf("a message after an expired one: may acknowledge up to %d, want %d", acks[from2], d.Seq)
	}
	es, err := b.List(0, 0)
	if err != nil || len(es) != 4 {
		t.Fatalf("inbox holds %d entries (%v), want 4", len(es), err)
	}
	if es, _ := b.List(es[1].N, 1); len(es) != 1 || es[0].Seq != base+20 {
		t.Fatalf("List after the second entry: %+v", es)
	}
}

func TestBoxSeqsAndPending(t *testing.T) {
	b := openBox(t)
	_, to := key(t, 2)
	now := time.Now()
	s1, p1, err := b.Next(to, now)
	if err != nil || p1 != 0 {
		t.Fatal(s1, p1, err)
	}
	s2, p2, _ := b.Next(to, now) // the same instant
	if s2 <= s1 || p2 != s1 {
		t.Fatalf("second message: seq %d prev %d after seq %d", s2, p2, s1)
	}
	p := Pending{ID: ID("x", s2), To: to.String(), Seq: s2, Expires: now.Add(time.Hour)}
	if err := b.AddPending(p); err != nil {
		t.Fatal(err)
	}
	ps, _ := b.Pending()
	if len(ps) != 1 || ps[0].Seq != s2 {
		t.Fatalf("pending %+v", ps)
	}
	if _, err := b.Notice(p, "not delivered", now); err != nil {
		t.Fatal(err)
	}
	if err := b.DropPending(p); err != nil {
		t.Fatal(err)
	}
	if ps, _ := b.Pending(); len(ps) != 0 {
		t.Fatalf("pending after the drop: %+v", ps)
	}
	es, _ := b.List(0, 0)
	if len(es) != 1 || es[0].Via != "notice" || es[0].To != to.String() {
		t.Fatalf("inbox %+v, want the notice", es)
	}
}

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
		fresh, _, err := b.Deliver([]Arrival{{D: d, Via: "mailbox"}}, now)
		if err != nil || (fresh == 1) != wantFresh {
			t.Fatalf("Deliver(seq %d) = %d fresh, %v; want fresh %v", d.Seq, fresh, err, wantFresh)
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
	deliver(msg(30, 20), true) // 20 has not come: 30 is held back
	upto(10)
	if es, _ := b.List(0, 0); len(es) != 1 {
		t.Fatalf("the inbox shows %d messages while 30 waits for 20, want 1", len(es))
	}
	deliver(msg(30, 20), false) // a copy of a held message is a copy too
	deliver(msg(20, 10), true)  // it has now: 20 then 30, and the chain runs to 30
	upto(30)
	if err := b.Acked(from, base+30); err != nil {
		t.Fatal(err)
	}
	upto(0) // nothing new to acknowledge
	// A predecessor too old to still be held counts as come.
	old := uint64(now.Add(-MaxTTL - time.Hour).UnixNano())
	_, from2 := key(t, 2)
	d := &Delivered{ID: ID(from2, uint64(now.UnixNano())), From: from2, Seq: uint64(now.UnixNano()), Prev: old, Sent: now, Message: Message{Text: "m"}}
	if _, _, err := b.Deliver([]Arrival{{D: d, Via: "direct"}}, now); err != nil {
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
	if es, _ := b.List(es[1].N, 1); len(es) != 1 || es[0].Seq != base+30 {
		t.Fatalf("List after the second entry: %+v, want seq 30 (20 came in second, then 30)", es)
	}
}

// A message held back for a predecessor that never comes is let out after
// a while, but not acknowledged: the missing one may still come from a
// replica, and when it does, the chain runs on past both.
func TestBoxReleasesHeldMessages(t *testing.T) {
	b := openBox(t)
	_, from := key(t, 1)
	now := time.Now()
	base := uint64(now.UnixNano())
	msg := func(seq, prev uint64) Arrival {
		return Arrival{D: &Delivered{ID: ID(from, base+seq), From: from, Seq: base + seq, Prev: base + prev, Sent: now, Message: Message{Text: "m"}}, Via: "mailbox"}
	}
	first := msg(1, 0)
	first.D.Prev = 0
	if _, held, err := b.Deliver([]Arrival{first, msg(3, 2), msg(4, 3)}, now); err != nil || held != 2 {
		t.Fatalf("held %d (%v), want 3 and 4 held back", held, err)
	}
	if n, _ := b.ReleaseHeld(now, time.Minute); n != 0 {
		t.Fatalf("released %d messages held for less than the wait", n)
	}
	n, err := b.ReleaseHeld(now.Add(2*time.Minute), time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("released %d (%v), want 3 and 4", n, err)
	}
	if es, _ := b.List(0, 0); len(es) != 3 {
		t.Fatalf("inbox holds %d, want 3", len(es))
	}
	acks, _ := b.ToAck()
	if acks[from] != base+1 {
		t.Fatalf("may acknowledge up to %d, want %d: not past the gap", acks[from]-base, 1)
	}
	if _, _, err := b.Deliver([]Arrival{msg(2, 1)}, now); err != nil {
		t.Fatal(err)
	}
	acks, _ = b.ToAck()
	if acks[from] != base+4 {
		t.Fatalf("after the missing message came: may acknowledge up to %d, want 4", acks[from]-base)
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
	// A message that went nowhere gives its Seq back: the next names the
	// one before it.
	s3, p3, _ := b.Next(to, now)
	if err := b.Unsend(to, s3, p3); err != nil {
		t.Fatal(err)
	}
	if _, p4, _ := b.Next(to, now); p4 != s2 {
		t.Fatalf("after a message given back, the next names %d as its predecessor, want %d", p4, s2)
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

// A gap that stays open is given up on after a while: the chain moves
// past it, so the messages after it are acknowledged and stop coming back.
func TestBoxGivesUpOnAGap(t *testing.T) {
	b := openBox(t)
	_, from := key(t, 1)
	now := time.Now()
	base := uint64(now.UnixNano())
	first := Arrival{D: &Delivered{ID: "a", From: from, Seq: base + 1, Sent: now, Message: Message{Text: "m"}}}
	after := Arrival{D: &Delivered{ID: "c", From: from, Seq: base + 3, Prev: base + 2, Sent: now, Message: Message{Text: "m"}}}
	if _, _, err := b.Deliver([]Arrival{first, after}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReleaseHeld(now.Add(time.Minute), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.GiveUpGaps(now.Add(2*time.Minute), 10*time.Minute); n != 0 {
		t.Fatalf("gave up on a gap let out a minute ago")
	}
	n, err := b.GiveUpGaps(now.Add(12*time.Minute), 10*time.Minute)
	if err != nil || n != 1 {
		t.Fatalf("GiveUpGaps = %d, %v; want the one sender", n, err)
	}
	acks, _ := b.ToAck()
	if acks[from] != base+3 {
		t.Fatalf("may acknowledge up to +%d, want +3", acks[from]-base)
	}
}

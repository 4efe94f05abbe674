package mail

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestWireRoundTrip(t *testing.T) {
	sender, _ := key(t, 1)
	_, to := key(t, 2)
	now := time.Now()
	rec, err := Seal(sender, to, Message{Text: "hi"}, 1, 0, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteDelivery(&buf, rec); err != nil {
		t.Fatal(err)
	}
	got, err := ReadDelivery(bufio.NewReader(&buf))
	if err != nil || !bytes.Equal(got.Marshal(), rec.Marshal()) {
		t.Fatalf("read back %v, %v", got, err)
	}
	buf.Reset()
	_ = WriteReply(&buf, nil)
	_ = WriteReply(&buf, errors.New("too many messages"))
	br := bufio.NewReader(&buf)
	if err := ReadReply(br); err != nil {
		t.Fatal(err)
	}
	var ref *Refused
	if err := ReadReply(br); !errors.As(err, &ref) || ref.Reason != "too many messages" {
		t.Fatalf("refusal read back as %v", err)
	}
}

func FuzzReadDelivery(f *testing.F) {
	sender, _ := key(f, 1)
	_, to := key(f, 2)
	now := time.Unix(1_800_000_000, 0)
	rec, _ := Seal(sender, to, Message{Text: "hi"}, 1, 0, now, now.Add(time.Hour))
	var buf bytes.Buffer
	_ = WriteDelivery(&buf, rec)
	f.Add(buf.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ReadDelivery(bufio.NewReader(bytes.NewReader(b)))
		if err == nil && r == nil {
			t.Fatal("no record and no error")
		}
	})
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte{0})
	f.Add([]byte{1, 3, 'a', 'b', 'c'})
	f.Add([]byte{1, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		err := ReadReply(bufio.NewReader(bytes.NewReader(b)))
		var ref *Refused
		if errors.As(err, &ref) && len(ref.Reason) > maxReason {
			t.Fatalf("a refusal of %d bytes", len(ref.Reason))
		}
	})
}

package ron

import (
	"bufio"
	"bytes"
	"reflect"
	"testing"
)

// FuzzDecodeBody decodes a message body of any type. What decodes must
// encode again (Encode accepts it) to a frame that decodes to an equal
// message, link values included: a row that changed on the way would be
// verified over other bytes than its owner signed. A row's Verify must not
// panic and must give the same answer for both copies.
func FuzzDecodeBody(f *testing.F) {
	r, _ := sampleRow(f)
	for _, m := range []*Message{{Type: MsgProbe, Seq: 3}, {Type: MsgAnswer, Seq: 1 << 40}, {Type: MsgRow, Row: r}} {
		b, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		// Skip the type byte and the length: the body alone.
		d := decoder{b: b[1:]}
		d.uvarint()
		f.Add(m.Type, d.b)
	}
	f.Add(MsgRow, []byte{0})
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		m, err := DecodeBody(typ, body)
		if err != nil {
			if m != nil {
				t.Fatalf("DecodeBody returned a message and an error: %v", err)
			}
			return
		}
		enc, err := m.Encode()
		if err != nil {
			t.Fatalf("decoded %+v but Encode refuses it: %v", m, err)
		}
		m2, err := ReadMessage(bufio.NewReader(bytes.NewReader(enc)))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("message changed on re-encoding:\n got %+v\nwant %+v", describe(m2), describe(m))
		}
		if m.Row != nil && (m.Row.Verify() == nil) != (m2.Row.Verify() == nil) {
			t.Fatal("Verify disagrees between a row and its re-encoding")
		}
	})
}

func describe(m *Message) any {
	if m.Row == nil {
		return *m
	}
	return *m.Row
}

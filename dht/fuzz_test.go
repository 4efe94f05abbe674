package dht

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// FuzzReadFrame feeds a chord stream to readFrame until it stops. Every
// frame that decodes must be written back by writeFrame to bytes that read
// as the same message, and a lying length prefix may make readFrame
// allocate at most one maxFrame buffer, never what the prefix claims.
func FuzzReadFrame(f *testing.F) {
	var all bytes.Buffer
	for _, w := range sampleWire(f) {
		var one bytes.Buffer
		if err := writeFrame(&one, w); err != nil {
			f.Fatal(err)
		}
		f.Add(one.Bytes())
		all.Write(one.Bytes())
	}
	f.Add(all.Bytes())
	f.Add(binary.AppendUvarint(nil, maxFrame))                 // a frame promised, none sent
	f.Add(binary.AppendUvarint(nil, maxFrame+1))               // over the limit
	f.Add(binary.AppendUvarint(nil, 1<<62))                    // a lie
	f.Add(bytes.Repeat([]byte{0xff}, binary.MaxVarintLen64+1)) // a varint that overflows
	f.Fuzz(func(t *testing.T, in []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		r := bufio.NewReader(bytes.NewReader(in))
		var got []*wireMsg
		for {
			m, err := readFrame(r)
			if err != nil {
				if m != nil {
					t.Fatalf("readFrame returned a message and an error: %v", err)
				}
				break
			}
			got = append(got, m)
		}
		runtime.ReadMemStats(&after)
		// One buffer per frame, each at most maxFrame or backed by input
		// bytes, plus the decoded messages: a few times the input, and one
		// maxFrame buffer for a frame that never arrives.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(maxFrame+64*len(in)+1<<20) {
			t.Fatalf("reading %d bytes allocated %d bytes", len(in), alloc)
		}
		for i, m := range got {
			var buf bytes.Buffer
			if err := writeFrame(&buf, m); err != nil {
				t.Fatal(err)
			}
			again, err := readFrame(bufio.NewReader(&buf))
			if err != nil {
				t.Fatalf("frame %d (op %d) does not read back after writing: %v", i, m.Op, err)
			}
			if !bytes.Equal(again.marshal(), m.marshal()) {
				t.Fatalf("frame %d (op %d) changed on writing and reading back", i, m.Op)
			}
			if _, err := readFrame(bufio.NewReader(&buf)); !errors.Is(err, io.EOF) {
				t.Fatalf("frame %d: bytes left after reading it back: %v", i, err)
			}
		}
	})
}

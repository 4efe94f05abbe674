package overlay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	payloads := [][]byte{{}, []byte("ping"), bytes.Repeat([]byte{7}, 1400), bytes.Repeat([]byte{1}, maxPacketSize)}
	var stream []byte
	for _, p := range payloads {
		stream = appendFrame(stream, p)
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	for i, want := range payloads {
		got, err := readFrame(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: got %d bytes, want %d", i, len(got), len(want))
		}
	}
	if _, err := readFrame(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestFrameRejects(t *testing.T) {
	tooBig := binary.AppendUvarint(nil, maxPacketSize+1)
	truncated := appendFrame(nil, []byte("hello"))[:4]
	badVarint := bytes.Repeat([]byte{0xff}, 11)
	for name, in := range map[string][]byte{"too big": tooBig, "truncated": truncated, "bad length": badVarint} {
		_, err := readFrame(bufio.NewReader(bytes.NewReader(in)))
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("%s: got %v, want a decode error", name, err)
		}
	}
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(tooBig))); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("too big: got %v, want ErrFrameTooLarge", err)
	}
}

// FuzzReadFrame: any input either fails with an error or decodes to frames
// that survive re-encoding and decoding again; it never panics or accepts
// an oversized frame. (Lengths in non-minimal varint form decode too, so
// the bytes themselves need not round-trip.)
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, []byte("ping")))
	f.Add(appendFrame(appendFrame(nil, nil), []byte{1, 2, 3}))
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Fuzz(func(t *testing.T, in []byte) {
		frames, err := readAll(in)
		if err != nil {
			return
		}
		var again []byte
		for _, p := range frames {
			if len(p) > maxPacketSize {
				t.Fatalf("frame of %d bytes accepted", len(p))
			}
			again = appendFrame(again, p)
		}
		frames2, err := readAll(again)
		if err != nil || len(frames2) != len(frames) {
			t.Fatalf("re-encoded frames do not decode: %v (%d vs %d frames)", err, len(frames2), len(frames))
		}
		for i := range frames {
			if !bytes.Equal(frames[i], frames2[i]) {
				t.Fatalf("frame %d changed on re-encoding", i)
			}
		}
	})
}

// readAll decodes every frame of in; an error unless it ends cleanly.
func readAll(in []byte) ([][]byte, error) {
	r := bufio.NewReader(bytes.NewReader(in))
	var out [][]byte
	for {
		p, err := readFrame(r)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
}

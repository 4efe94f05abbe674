package distribute

import (
	"bufio"
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func roundTripRequest(t *testing.T, r Request) Request {
	t.Helper()
	b, err := EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return got
}

func TestRequestRoundTrip(t *testing.T) {
	o := &Order{Hash: [20]byte{1, 2, 3, 19: 9}, Job: "d-1", Name: "data.bin", Size: 64 << 20, Hints: []peer.ID{newID(t), newID(t)}}
	got := roundTripRequest(t, Request{Order: o})
	if got.Order == nil || got.Status != nil || !reflect.DeepEqual(*got.Order, *o) {
		t.Fatalf("order: got %+v, want %+v", got, o)
	}
	s := &StatusRequest{Hash: [20]byte{7, 19: 1}}
	got = roundTripRequest(t, Request{Status: s})
	if got.Status == nil || got.Order != nil || got.Status.Hash != s.Hash {
		t.Fatalf("status: got %+v", got)
	}
	// Long strings are cut to their bounds, not refused.
	long := &Order{Name: strings.Repeat("n", 1000), Job: strings.Repeat("j", 100)}
	got = roundTripRequest(t, Request{Order: long})
	if len(got.Order.Name) != maxName || len(got.Order.Job) != maxJob {
		t.Fatalf("long strings: name %d, job %d", len(got.Order.Name), len(got.Order.Job))
	}
	if _, err := EncodeRequest(Request{}); err == nil {
		t.Fatal("an empty request encoded")
	}
	if _, err := EncodeRequest(Request{Order: o, Status: s}); err == nil {
		t.Fatal("a request with both an order and a status request encoded")
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, r := range []Reply{
		{State: StateFetching, Have: 3, Pieces: 256, Bytes: 3 << 18, Size: 64 << 20, Rate: 2.5e6, Seconds: 1.25},
		{State: StateRefused, Reason: "not an operator"},
		{State: StateDone, Have: 256, Pieces: 256, Bytes: 64 << 20, Size: 64 << 20},
		{State: StateUnknown},
	} {
		b, err := EncodeReply(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadReply(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := EncodeReply(Reply{State: StateFetching, Have: 1, Pieces: 2, Rate: 1})
	body := good[1:] // one length byte
	bad := map[string][]byte{
		"empty":        {},
		"kind":         {9},
		"truncated":    body[:len(body)-3],
		"trailing":     append(bytes.Clone(body), 0),
		"state":        mustReplyBody(t, Reply{State: "sleeping"}),
		"have > total": mustReplyBody(t, Reply{State: StateFetching, Have: 5, Pieces: 4}),
	}
	nan := bytes.Clone(body)
	copy(nan[len(nan)-16:], []byte{0x7f, 0xf8, 0, 0, 0, 0, 0, 1})
	bad["NaN rate"] = nan
	for name, b := range bad {
		if _, err := DecodeReply(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("reply %s: err %v, want ErrMalformed", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"empty":          {},
		"kind":           {kindReply},
		"short hash":     {kindStatus, 1, 2, 3},
		"status+1":       append(append([]byte{kindStatus}, make([]byte, 20)...), 0),
		"long job":       append(append([]byte{kindOrder}, make([]byte, 20)...), 200),
		"bad hint":       append(append([]byte{kindOrder}, make([]byte, 20)...), 0, 0, 1, 1, 3, 1, 2, 3),
		"size too large": append(append(append([]byte{kindOrder}, make([]byte, 20)...), 0, 0), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
	} {
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("request %s: err %v, want ErrMalformed", name, err)
		}
	}
	// A frame longer than the bound is refused before it is read.
	huge := []byte{0xff, 0xff, 0x03}
	if _, err := ReadRequest(bufio.NewReader(bytes.NewReader(huge))); !errors.Is(err, ErrMalformed) {
		t.Errorf("a huge frame: err %v", err)
	}
	if _, err := EncodeReply(Reply{State: StateDone, Have: -1}); err == nil {
		t.Error("a negative count encoded")
	}
	if b, err := EncodeReply(Reply{State: StateDone, Rate: math.NaN()}); err != nil {
		t.Error(err)
	} else if r, err := DecodeReply(b[1:]); err != nil || r.Rate != 0 {
		t.Errorf("a NaN rate is sent as 0: got %v, %v", r.Rate, err)
	}
}

func mustReplyBody(t *testing.T, r Reply) []byte {
	t.Helper()
	var e encoder
	e.b = append(e.b, kindReply)
	e.str(r.State)
	e.str(r.Reason)
	e.uint(uint64(r.Have))
	e.uint(uint64(r.Pieces))
	e.uint(uint64(r.Bytes))
	e.uint(uint64(r.Size))
	e.b = append(e.b, make([]byte, 16)...)
	return e.b
}

// FuzzDecode: no input makes a decoder panic, and whatever decodes
// encodes back to the same bytes.
func FuzzDecode(f *testing.F) {
	o, _ := EncodeRequest(Request{Order: &Order{Hash: [20]byte{1}, Job: "j", Name: "n", Size: 10}})
	hinted, _ := EncodeRequest(Request{Order: &Order{Hash: [20]byte{3}, Hints: []peer.ID{"\x00\x03abc"}}})
	s, _ := EncodeRequest(Request{Status: &StatusRequest{Hash: [20]byte{2}}})
	r, _ := EncodeReply(Reply{State: StateFetching, Reason: "r", Have: 1, Pieces: 2, Bytes: 3, Size: 4, Rate: 5})
	for _, b := range [][]byte{o, hinted, s, r, {0}, {1, 1}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReader(bytes.NewReader(b))
		if req, err := ReadRequest(br); err == nil {
			enc, err := EncodeRequest(req)
			if err != nil {
				t.Fatalf("decoded %+v does not encode: %v", req, err)
			}
			if !bytes.HasPrefix(b, enc) {
				t.Fatalf("request %x re-encodes as %x", b, enc)
			}
		}
		if rep, err := ReadReply(bufio.NewReader(bytes.NewReader(b))); err == nil {
			enc, err := EncodeReply(rep)
			if err != nil {
				t.Fatalf("decoded %+v does not encode: %v", rep, err)
			}
			if !bytes.HasPrefix(b, enc) {
				t.Fatalf("reply %x re-encodes as %x", b, enc)
			}
		}
	})
}

package meta

import (
	"bytes"
	"crypto/sha1"
	"encoding/base32"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// content returns n deterministic pseudo-random bytes.
func content(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkPieces compares every piece of info against SHA-1s computed
// directly over data, the concatenated content.
func checkPieces(t *testing.T, info *Info, data []byte) {
	t.Helper()
	pl := int(info.PieceLength)
	want := (len(data) + pl - 1) / pl
	if info.NumPieces() != want {
		t.Fatalf("NumPieces = %d, want %d", info.NumPieces(), want)
	}
	if info.TotalLength() != int64(len(data)) {
		t.Fatalf("TotalLength = %d, want %d", info.TotalLength(), len(data))
	}
	for k := 0; k < want; k++ {
		piece := data[k*pl : min((k+1)*pl, len(data))]
		if got := info.PieceSize(k); got != int64(len(piece)) {
			t.Errorf("PieceSize(%d) = %d, want %d", k, got, len(piece))
		}
		if got := info.PieceHash(k); got != sha1.Sum(piece) {
			t.Errorf("PieceHash(%d) mismatch", k)
		}
	}
	if info.PieceSize(want) != 0 || info.PieceSize(-1) != 0 || info.PieceHash(want) != [20]byte{} {
		t.Error("out-of-range piece queries should give zero values")
	}
}

func TestBuildSingleFile(t *testing.T) {
	dir := t.TempDir()
	data := content(2*16384+123, 1)
	path := filepath.Join(dir, "movie.bin")
	writeFile(t, path, data)

	var calls int
	var last [2]int64
	info, err := Build(path, 16384, func(done, total int64) {
		calls++
		last = [2]int64{done, total}
	})
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "movie.bin" || info.Length != int64(len(data)) || info.Files != nil {
		t.Fatalf("unexpected info: name %q length %d files %v", info.Name, info.Length, info.Files)
	}
	checkPieces(t, info, data)
	if got := info.PieceSize(2); got != 123 {
		t.Errorf("last piece size = %d, want 123", got)
	}
	if calls == 0 || last != [2]int64{int64(len(data)), int64(len(data))} {
		t.Errorf("progress: %d calls, last %v", calls, last)
	}
	want := []Span{{Path: []string{"movie.bin"}, Offset: 0, Length: int64(len(data))}}
	if got := info.Spans(); !reflect.DeepEqual(got, want) {
		t.Errorf("Spans = %v, want %v", got, want)
	}

	// Default piece length: chosen for the size.
	info, err = Build(path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	want0 := AutoPieceLength(int64(len(data)))
	if info.PieceLength != want0 || info.NumPieces() != int((int64(len(data))+want0-1)/want0) {
		t.Errorf("default build: piece length %d, %d pieces", info.PieceLength, info.NumPieces())
	}
	checkPieces(t, info, data)
}

func TestBuildDirectory(t *testing.T) {
	root := filepath.Join(t.TempDir(), "share")
	files := []struct {
		path string
		data []byte
	}{
		// In the expected (sorted) order.
		{"a.txt", content(20000, 2)}, // spans the first piece boundary
		{"empty", nil},
		{"sub/b.bin", content(2*16384+5, 3)},
		{"sub/deeper/c", content(100, 4)},
		{"z", content(7, 5)},
	}
	// Write in a different order than expected.
	for k := len(files) - 1; k >= 0; k-- {
		writeFile(t, filepath.Join(root, files[k].path), files[k].data)
	}
	if err := os.MkdirAll(filepath.Join(root, "emptydir", "x"), 0o755); err != nil {
		t.Fatal(err)
	}

	info, err := Build(root, 16384, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "share" || info.Length != 0 || len(info.Files) != len(files) {
		t.Fatalf("unexpected info: name %q length %d files %v", info.Name, info.Length, info.Files)
	}
	var all []byte
	var off int64
	spans := info.Spans()
	for k, f := range files {
		elems := strings.Split(f.path, "/")
		if !reflect.DeepEqual(info.Files[k].Path, elems) || info.Files[k].Length != int64(len(f.data)) {
			t.Errorf("file %d = %v, want %v (%d bytes)", k, info.Files[k], elems, len(f.data))
		}
		want := Span{Path: append([]string{"share"}, elems...), Offset: off, Length: int64(len(f.data))}
		if !reflect.DeepEqual(spans[k], want) {
			t.Errorf("span %d = %v, want %v", k, spans[k], want)
		}
		off += int64(len(f.data))
		all = append(all, f.data...)
	}
	checkPieces(t, info, all)
	if got, want := info.PieceSize(info.NumPieces()-1), int64(len(all)%16384); got != want {
		t.Errorf("last piece size = %d, want %d", got, want)
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	writeFile(t, good, []byte("hello"))

	withLink := filepath.Join(dir, "withlink")
	writeFile(t, filepath.Join(withLink, "f"), []byte("x"))
	if err := os.Symlink(good, filepath.Join(withLink, "link")); err != nil {
		t.Skip("symlinks not supported:", err)
	}
	rootLink := filepath.Join(dir, "rootlink")
	if err := os.Symlink(good, rootLink); err != nil {
		t.Fatal(err)
	}
	emptyDir := filepath.Join(dir, "emptydir")
	if err := os.MkdirAll(filepath.Join(emptyDir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	zeros := filepath.Join(dir, "zeros")
	writeFile(t, filepath.Join(zeros, "a"), nil)
	writeFile(t, filepath.Join(zeros, "b"), nil)
	emptyFile := filepath.Join(dir, "emptyfile")
	writeFile(t, emptyFile, nil)

	cases := []struct {
		name, path string
		pl         int64
		want       string
	}{
		{"symlink in tree", withLink, 0, "symbolic link"},
		{"symlink root", rootLink, 0, "symbolic link"},
		{"empty dir", emptyDir, 0, "no regular files"},
		{"only empty files", zeros, 0, "no content"},
		{"empty file", emptyFile, 0, "no content"},
		{"missing", filepath.Join(dir, "nope"), 0, "no such file"},
		{"piece length 1000", good, 1000, "not a power of two"},
		{"piece length 8 KiB", good, 8 << 10, "not a power of two"},
		{"piece length 32 MiB", good, 32 << 20, "not a power of two"},
		{"piece length 48 KiB", good, 48 << 10, "not a power of two"},
		{"negative piece length", good, -1, "not a power of two"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(c.path, c.pl, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

// makeInfo returns a valid multi-file Info with zero piece hashes.
func makeInfo(files ...File) *Info {
	info := &Info{Name: "root", PieceLength: 16384, Files: files}
	n := (info.TotalLength() + 16383) / 16384
	info.Pieces = strings.Repeat("\x01", int(n)*20)
	return info
}

func sampleInfo() *Info {
	return makeInfo(
		File{Length: 100, Path: []string{"a"}},
		File{Length: 0, Path: []string{"b", "empty"}},
		File{Length: 20000, Path: []string{"b", "c d&e"}},
	)
}

func sampleSingle() *Info {
	return &Info{Name: "one file.txt", PieceLength: 32768, Length: 40000, Pieces: strings.Repeat("\xab", 40)}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, info := range []*Info{sampleInfo(), sampleSingle()} {
		if err := info.Validate(); err != nil {
			t.Fatal(err)
		}
		b, err := info.Encode()
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeInfo(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, info) {
			t.Fatalf("DecodeInfo = %+v, want %+v", got, info)
		}
		h := info.Hash()
		if h != sha1.Sum(b) || got.Hash() != h || info.Hash() != h {
			t.Fatal("Hash is not the stable SHA-1 of the encoding")
		}

		tb, err := MarshalTorrent(info, 1700000000)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(tb, []byte("d10:created by4:peer13:creation datei1700000000e4:info")) {
			t.Fatalf("unexpected torrent encoding %q", tb)
		}
		tor, err := ParseTorrent(tb)
		if err != nil {
			t.Fatal(err)
		}
		if tor.Hash != h || !bytes.Equal(tor.InfoBytes, b) || !reflect.DeepEqual(tor.Info, info) {
			t.Fatal("ParseTorrent did not give back the same info and hash")
		}
	}
	// The single-file encoding has the expected shape.
	b, _ := sampleSingle().Encode()
	want := "d6:lengthi40000e4:name12:one file.txt12:piece lengthi32768e6:pieces40:" + strings.Repeat("\xab", 40) + "e"
	if string(b) != want {
		t.Fatalf("Encode = %q, want %q", b, want)
	}
}

func TestDecodeInfoRejects(t *testing.T) {
	good, _ := sampleSingle().Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"not a dict":     []byte("li1ee"),
		"trailing bytes": append(append([]byte{}, good...), 'x'),
		"unsorted keys":  []byte("d4:name1:a6:lengthi1e12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"extra key":      []byte("d6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:012345678901234567897:privatei1ee"),
		"leading zero":   []byte("d6:lengthi01e4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"zero length":    []byte("d5:filesld6:lengthi1e4:pathl1:beee6:lengthi0e4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"wrong type":     []byte("d6:lengthi1e4:namei5e12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"list for name":  []byte("d6:lengthi1e4:namel1:ae12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"file extra key": []byte("d5:filesld6:lengthi1e4:pathl1:be1:xi1eee4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"file no length": []byte("d5:filesld4:pathl1:beee4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"path not list":  []byte("d5:filesld6:lengthi1e4:path1:bee4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"huge int":       []byte("d6:lengthi99999999999999999999e4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"),
		"missing pieces": []byte("d6:lengthi1e4:name1:a12:piece lengthi16384ee"),
		"too big":        make([]byte, MaxInfoSize+1),
		"invalid":        []byte("d6:lengthi1e4:name2:..12:piece lengthi16384e6:pieces20:01234567890123456789e"),
	}
	// Sanity check: the base of the hand-written cases is accepted.
	if _, err := DecodeInfo([]byte("d6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e")); err != nil {
		t.Fatal(err)
	}
	for name, b := range cases {
		if _, err := DecodeInfo(b); err == nil {
			t.Errorf("%s: DecodeInfo accepted %q", name, truncate(string(b), 80))
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestParseTorrentRejects(t *testing.T) {
	info, _ := sampleSingle().Encode()
	cases := map[string][]byte{
		"empty":        nil,
		"not a dict":   []byte("l4:infoe"),
		"no info":      []byte("d10:created by4:peere"),
		"info not map": []byte("d4:infoi1ee"),
		"bad info":     []byte("d4:infod4:name1:aee"),
		"dup info":     []byte("d4:info" + string(info) + "4:info" + string(info) + "e"),
		"trailing":     []byte("d4:info" + string(info) + "ee"),
		"deep":         []byte("d1:a" + strings.Repeat("l", 100) + strings.Repeat("e", 100) + "4:info" + string(info) + "e"),
		"bad int":      []byte("d1:ai-0e4:info" + string(info) + "e"),
		"unsorted":     []byte("d4:info" + string(info) + "1:ai1ee"),
		"too big":      make([]byte, MaxInfoSize+64<<10+1),
	}
	for name, b := range cases {
		if _, err := ParseTorrent(b); err == nil {
			t.Errorf("%s: ParseTorrent accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Unknown top-level keys are fine.
	tor, err := ParseTorrent([]byte("d7:comment2:hi4:info" + string(info) + "3:zzzli1eee"))
	if err != nil || tor.Hash != sha1.Sum(info) {
		t.Fatalf("ParseTorrent with extra keys: %v", err)
	}
}

func TestInfoHash(t *testing.T) {
	h := sampleInfo().Hash()
	s := h.String()
	if len(s) != 40 || strings.ToLower(s) != s {
		t.Fatalf("String = %q", s)
	}
	b32 := base32.StdEncoding.EncodeToString(h[:])
	for _, in := range []string{s, strings.ToUpper(s), b32, strings.ToLower(b32)} {
		got, err := ParseInfoHash(in)
		if err != nil || got != h {
			t.Errorf("ParseInfoHash(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "abc", s[:39], s + "0", strings.Replace(s, s[:1], "g", 1), "1" + b32[1:], b32[:31] + "="} {
		if _, err := ParseInfoHash(in); err == nil {
			t.Errorf("ParseInfoHash(%q) accepted", in)
		}
	}
}

func TestMagnet(t *testing.T) {
	h := sampleInfo().Hash()
	for _, name := range []string{"", "plain", "my file & co+1 = ü #2%"} {
		m := Magnet(h, name)
		if name == "" && strings.Contains(m, "dn=") {
			t.Errorf("Magnet with empty name has dn: %q", m)
		}
		if strings.Contains(m, " ") {
			t.Errorf("Magnet has an unescaped space: %q", m)
		}
		gh, gn, err := ParseMagnet(m)
		if err != nil || gh != h || gn != name {
			t.Errorf("ParseMagnet(%q) = %v, %q, %v", m, gh, gn, err)
		}
	}
	if m := Magnet(h, "a b"); m != "magnet:?xt=urn:btih:"+h.String()+"&dn=a%20b" {
		t.Errorf("Magnet = %q", m)
	}
	b32 := base32.StdEncoding.EncodeToString(h[:])
	gh, gn, err := ParseMagnet("MAGNET:?tr=udp%3A%2F%2Fx&xt=urn:btmh:1220abcd&xt=URN:BTIH:" + b32 + "&dn=a+b")
	if err != nil || gh != h || gn != "a b" {
		t.Errorf("base32 magnet: %v, %q, %v", gh, gn, err)
	}
	other := h
	other[0]++
	for _, bad := range []string{
		"",
		"http://example.com/?xt=urn:btih:" + h.String(),
		"magnet:xt=urn:btih:" + h.String(),
		"magnet:?dn=x",
		"magnet:?xt=urn:btmh:1220abcd",
		"magnet:?xt=urn:btih:1234",
		"magnet:?xt=urn:btih:" + h.String() + "&xt=urn:btih:" + other.String(),
		"magnet:?xt=urn:btih:" + h.String() + "&dn=%zz",
	} {
		if _, _, err := ParseMagnet(bad); err == nil {
			t.Errorf("ParseMagnet(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := sampleInfo().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := sampleSingle().Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		mutate func(i *Info)
		want   string
	}{
		{"empty name", func(i *Info) { i.Name = "" }, "empty path element"},
		{"dot name", func(i *Info) { i.Name = "." }, "not allowed"},
		{"dotdot name", func(i *Info) { i.Name = ".." }, "not allowed"},
		{"slash name", func(i *Info) { i.Name = "a/b" }, "slash"},
		{"backslash name", func(i *Info) { i.Name = `a\b` }, "slash"},
		{"NUL name", func(i *Info) { i.Name = "a\x00b" }, "NUL"},
		{"piece length 0", func(i *Info) { i.PieceLength = 0 }, "piece length 0 is not a power of two"},
		{"piece length 1000", func(i *Info) { i.PieceLength = 1000 }, "piece length 1000 is not"},
		{"piece length too small", func(i *Info) { i.PieceLength = 8192 }, "piece length"},
		{"piece length too big", func(i *Info) { i.PieceLength = 32 << 20 }, "piece length"},
		{"pieces not multiple of 20", func(i *Info) { i.Pieces = i.Pieces[:39] }, "multiple of 20"},
		{"too few pieces", func(i *Info) { i.Pieces = i.Pieces[:20] }, "need 2"},
		{"too many pieces", func(i *Info) { i.Pieces += i.Pieces[:20] }, "need 2"},
		{"length and files", func(i *Info) { i.Length = 5 }, "both"},
		{"neither length nor files", func(i *Info) { i.Files = nil }, "want > 0"},
		{"empty files list", func(i *Info) { i.Files = []File{} }, "present but empty"},
		{"negative file length", func(i *Info) { i.Files[0].Length = -1 }, "negative"},
		{"empty file path", func(i *Info) { i.Files[0].Path = nil }, "empty path"},
		{"dotdot element", func(i *Info) { i.Files[0].Path = []string{"..", "x"} }, "not allowed"},
		{"empty element", func(i *Info) { i.Files[0].Path = []string{""} }, "empty path element"},
		{"slash element", func(i *Info) { i.Files[0].Path = []string{"x/y"} }, "slash"},
		{"duplicate path", func(i *Info) { i.Files[0].Path = []string{"b", "c d&e"} }, "duplicate"},
		{"file is a directory", func(i *Info) { i.Files[0].Path = []string{"b"} }, "used as a directory"},
		{"file is a deep directory", func(i *Info) { i.Files[2].Path = []string{"a", "x", "y"} }, "used as a directory"},
		{"total zero", func(i *Info) { i.Files[0].Length, i.Files[2].Length, i.Pieces = 0, 0, "" }, "total length is 0"},
		{"total too big", func(i *Info) { i.Files[0].Length = 1 << 50 }, "limit"},
		{"too many pieces for limit", func(i *Info) { i.Files[0].Length = MaxPieces * 16384 }, "exceed the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			info := sampleInfo()
			c.mutate(info)
			err := info.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, c.want)
			}
		})
	}
	single := []struct {
		name   string
		mutate func(i *Info)
	}{
		{"negative length", func(i *Info) { i.Length = -5 }},
		{"length too big", func(i *Info) { i.Length = 1<<50 + 1 }},
		{"length zero", func(i *Info) { i.Length = 0 }},
	}
	for _, c := range single {
		info := sampleSingle()
		c.mutate(info)
		if err := info.Validate(); err == nil {
			t.Errorf("single %s: Validate accepted", c.name)
		}
	}
}

func fuzzSeeds() [][]byte {
	a, _ := sampleInfo().Encode()
	b, _ := sampleSingle().Encode()
	return [][]byte{a, b}
}

func FuzzDecodeInfo(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Add([]byte("d6:lengthi1e4:name1:a12:piece lengthi16384e6:pieces20:01234567890123456789e"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := DecodeInfo(b)
		if err != nil {
			return
		}
		if err := info.Validate(); err != nil {
			t.Fatalf("accepted info does not validate: %v", err)
		}
		re, err := info.Encode()
		if err != nil || !bytes.Equal(re, b) {
			t.Fatalf("accepted info re-encodes differently: %v", err)
		}
		var sum, end int64
		for k := range info.NumPieces() {
			sum += info.PieceSize(k)
		}
		for _, s := range info.Spans() {
			if s.Offset != end || len(s.Path) == 0 {
				t.Fatalf("bad span %v", s)
			}
			end += s.Length
		}
		if sum != info.TotalLength() || end != sum {
			t.Fatalf("pieces cover %d bytes, spans %d, total %d", sum, end, info.TotalLength())
		}
	})
}

func FuzzParseTorrent(f *testing.F) {
	for _, s := range fuzzSeeds() {
		info, _ := DecodeInfo(s)
		tb, _ := MarshalTorrent(info, 1700000000)
		f.Add(tb)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tor, err := ParseTorrent(b)
		if err != nil {
			return
		}
		if tor.Hash != sha1.Sum(tor.InfoBytes) || tor.Info.Hash() != tor.Hash {
			t.Fatal("hash mismatch")
		}
		if !bytes.Contains(b, tor.InfoBytes) {
			t.Fatal("InfoBytes not found in the input")
		}
		tb, err := MarshalTorrent(tor.Info, 1)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseTorrent(tb)
		if err != nil || again.Hash != tor.Hash {
			t.Fatalf("re-marshalled torrent: %v", err)
		}
	})
}

func FuzzParseMagnet(f *testing.F) {
	h := sampleInfo().Hash()
	f.Add(Magnet(h, "my file & co"))
	f.Add(Magnet(h, ""))
	f.Add("magnet:?xt=urn:btih:" + base32.StdEncoding.EncodeToString(h[:]) + "&dn=x+y&tr=udp://t")
	f.Fuzz(func(t *testing.T, s string) {
		h, name, err := ParseMagnet(s)
		if err != nil {
			return
		}
		h2, name2, err := ParseMagnet(Magnet(h, name))
		if err != nil || h2 != h || name2 != name {
			t.Fatalf("round trip of %q: %v %q %v", s, h2, name2, err)
		}
	})
}

package meta

import (
	"errors"
	"fmt"
	"strconv"
)

// Untrusted input is parsed here rather than with the reflective bencode
// decoder: a hostile 16 MiB info dict of millions of tiny values costs the
// reflective decoder seconds and gigabytes, while this parser accepts only
// the canonical encoding of the exact info schema, allocates little more
// than the input and fails on the first byte that cannot belong to a valid
// manifest.

// maxSkipDepth bounds the nesting of values skipped in a .torrent file.
const maxSkipDepth = 32

type parser struct {
	b   []byte
	s   string // b as a string; decoded strings are substrings of it
	pos int
}

func newParser(b []byte) *parser { return &parser{b: b, s: string(b)} }

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) peek() byte {
	if p.pos >= len(p.b) {
		return 0
	}
	return p.b[p.pos]
}

// open consumes the byte c ('d' or 'l') that starts a container.
func (p *parser) open(c byte, what string) error {
	if p.peek() != c {
		return p.errorf("%s is not a %s", what, map[byte]string{'d': "dictionary", 'l': "list"}[c])
	}
	p.pos++
	return nil
}

// end reports whether the container being read ends here, consuming the
// 'e' if so.
func (p *parser) end() (bool, error) {
	switch p.peek() {
	case 0:
		if p.pos >= len(p.b) {
			return false, p.errorf("unexpected end of input")
		}
	case 'e':
		p.pos++
		return true, nil
	}
	return false, nil
}

// key reads a dictionary key and checks it sorts strictly after prev.
func (p *parser) key(prev string, first bool) (string, error) {
	if c := p.peek(); c < '0' || c > '9' {
		return "", p.errorf("dictionary key is not a string")
	}
	k, err := p.str("dictionary key")
	if err != nil {
		return "", err
	}
	if !first && k <= prev {
		if k == prev {
			return "", p.errorf("duplicate dictionary key %q", truncate(k, 64))
		}
		return "", p.errorf("dictionary key %q is out of order", truncate(k, 64))
	}
	return k, nil
}

func (p *parser) str(what string) (string, error) {
	start := p.pos
	n := 0
	for p.pos < len(p.b) && p.b[p.pos] >= '0' && p.b[p.pos] <= '9' {
		if p.pos-start >= 9 {
			return "", p.errorf("%s: string length too large", what)
		}
		n = n*10 + int(p.b[p.pos]-'0')
		p.pos++
	}
	if p.pos == start || p.pos >= len(p.b) || p.b[p.pos] != ':' {
		return "", p.errorf("%s is not a string", what)
	}
	if p.b[start] == '0' && p.pos-start > 1 {
		return "", p.errorf("%s: string length %q has leading zeros", what, p.b[start:p.pos])
	}
	p.pos++ // ':'
	if n > len(p.b)-p.pos {
		return "", p.errorf("%s: string of length %d runs past the end of input", what, n)
	}
	v := p.s[p.pos : p.pos+n]
	p.pos += n
	return v, nil
}

// intLiteral reads one canonical bencoded integer and returns its digits.
func (p *parser) intLiteral(what string) (string, error) {
	if p.peek() != 'i' {
		return "", p.errorf("%s is not an integer", what)
	}
	p.pos++
	start := p.pos
	if p.peek() == '-' {
		p.pos++
	}
	digits := p.pos
	for p.pos < len(p.b) && p.b[p.pos] >= '0' && p.b[p.pos] <= '9' {
		p.pos++
	}
	if p.pos >= len(p.b) || p.b[p.pos] != 'e' || p.pos == digits {
		return "", p.errorf("%s: malformed integer", what)
	}
	lit := p.s[start:p.pos]
	if p.b[digits] == '0' && (p.pos-digits > 1 || digits != start) {
		return "", p.errorf("%s: integer %q is not in canonical form", what, truncate(lit, 32))
	}
	p.pos++ // 'e'
	return lit, nil
}

func (p *parser) integer(what string) (int64, error) {
	lit, err := p.intLiteral(what)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(lit, 10, 64)
	if err != nil {
		return 0, p.errorf("%s: integer %q out of range", what, truncate(lit, 32))
	}
	return v, nil
}

// skip checks and skips one canonical bencoded value of any type.
func (p *parser) skip(depth int) error {
	switch c := p.peek(); {
	case p.pos >= len(p.b):
		return p.errorf("unexpected end of input")
	case c == 'i':
		// Any canonical integer, however large.
		_, err := p.intLiteral("value")
		return err
	case c >= '0' && c <= '9':
		_, err := p.str("value")
		return err
	case c == 'l' || c == 'd':
		if depth >= maxSkipDepth {
			return p.errorf("nesting deeper than %d levels", maxSkipDepth)
		}
		p.pos++
		var prev string
		for first := true; ; first = false {
			done, err := p.end()
			if err != nil || done {
				return err
			}
			if c == 'd' {
				if prev, err = p.key(prev, first); err != nil {
					return err
				}
				if done, err := p.end(); err != nil || done {
					return p.errorf("dictionary key %q has no value", truncate(prev, 64))
				}
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
		}
	default:
		return p.errorf("unexpected byte %q", c)
	}
}

// parseInfo decodes a canonical info dictionary. It checks the encoding
// and the types; Validate checks the values.
func parseInfo(b []byte) (*Info, error) {
	p := newParser(b)
	if err := p.open('d', "info"); err != nil {
		return nil, err
	}
	var info Info
	var prev string
	seen := map[string]bool{}
	for first := true; ; first = false {
		done, err := p.end()
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		k, err := p.key(prev, first)
		if err != nil {
			return nil, err
		}
		prev = k
		seen[k] = true
		switch k {
		case "name":
			info.Name, err = p.str("name")
		case "piece length":
			info.PieceLength, err = p.integer("piece length")
		case "pieces":
			info.Pieces, err = p.str("pieces")
		case "length":
			info.Length, err = p.integer("length")
			if err == nil && info.Length == 0 {
				err = p.errorf("length is 0")
			}
		case "files":
			info.Files, err = p.files()
		default:
			return nil, p.errorf("unsupported key %q", truncate(k, 64))
		}
		if err != nil {
			return nil, err
		}
	}
	if p.pos != len(b) {
		return nil, fmt.Errorf("%d trailing bytes after the dictionary", len(b)-p.pos)
	}
	for _, k := range []string{"name", "piece length", "pieces"} {
		if !seen[k] {
			return nil, fmt.Errorf("missing key %q", k)
		}
	}
	return &info, nil
}

func (p *parser) files() ([]File, error) {
	if err := p.open('l', "files"); err != nil {
		return nil, err
	}
	files := []File{}
	for {
		done, err := p.end()
		if err != nil {
			return nil, err
		}
		if done {
			return files, nil
		}
		f, err := p.file(len(files))
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
}

func (p *parser) file(n int) (File, error) {
	var f File
	if err := p.open('d', "file"); err != nil {
		return f, fileError(n, err)
	}
	// The only canonical form is "length" then "path", both present.
	if err := p.fileKey("length"); err != nil {
		return f, fileError(n, err)
	}
	var err error
	if f.Length, err = p.integer("length"); err != nil {
		return f, fileError(n, err)
	}
	if err := p.fileKey("path"); err != nil {
		return f, fileError(n, err)
	}
	if err := p.open('l', "path"); err != nil {
		return f, fileError(n, err)
	}
	// Count the elements first so that the path is allocated once.
	start, count := p.pos, 0
	for p.peek() >= '0' && p.peek() <= '9' {
		if _, err := p.str("path element"); err != nil {
			return f, fileError(n, err)
		}
		count++
	}
	p.pos = start
	if count > 0 {
		f.Path = make([]string, count)
		for k := range f.Path {
			f.Path[k], _ = p.str("path element")
		}
	}
	if p.peek() != 'e' {
		return f, fileError(n, p.errorf("path element is not a string"))
	}
	p.pos++
	if p.peek() != 'e' {
		return f, fileError(n, p.errorf("unexpected key after \"path\""))
	}
	p.pos++
	return f, nil
}

func (p *parser) fileKey(want string) error {
	k, err := p.str("key")
	if err != nil {
		return err
	}
	if k != want {
		return p.errorf("got key %q, want %q", truncate(k, 64), want)
	}
	return nil
}

func fileError(n int, err error) error { return fmt.Errorf("file %d: %w", n, err) }

// torrentInfo checks that b is one canonical bencoded dictionary and
// returns the raw bytes of its "info" value, or nil if it has none.
func torrentInfo(b []byte) ([]byte, error) {
	p := newParser(b)
	if err := p.open('d', "torrent file"); err != nil {
		return nil, err
	}
	var info []byte
	var prev string
	for first := true; ; first = false {
		done, err := p.end()
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
		if prev, err = p.key(prev, first); err != nil {
			return nil, err
		}
		if done, err := p.end(); err != nil || done {
			return nil, p.errorf("dictionary key %q has no value", truncate(prev, 64))
		}
		start := p.pos
		if err := p.skip(1); err != nil {
			return nil, err
		}
		if prev == "info" {
			info = b[start:p.pos]
		}
	}
	if p.pos != len(b) {
		return nil, errors.New("trailing bytes after the dictionary")
	}
	return info, nil
}

package meta

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Validate checks everything a peer must check before trusting a decoded
// Info: a safe name, a sane piece length, exactly one of Length or Files,
// safe and non-conflicting file paths, bounded total length and piece
// count, and a Pieces string of exactly the right size.
func (i *Info) Validate() error {
	if err := checkElement(i.Name); err != nil {
		return fmt.Errorf("meta: name: %w", err)
	}
	if err := checkPieceLength(i.PieceLength); err != nil {
		return err
	}
	var total int64
	switch {
	case i.Files == nil:
		if i.Length <= 0 {
			return fmt.Errorf("meta: single-file info has length %d; want > 0 (or a files list)", i.Length)
		}
		if i.Length > maxTotalLength {
			return fmt.Errorf("meta: length %d exceeds the %d-byte limit", i.Length, int64(maxTotalLength))
		}
		total = i.Length
	case len(i.Files) == 0:
		return errors.New("meta: files list is present but empty")
	case i.Length != 0:
		return fmt.Errorf("meta: info has both a length (%d) and a files list", i.Length)
	default:
		var err error
		if total, err = checkFiles(i.Files); err != nil {
			return err
		}
	}
	if total <= 0 {
		return errors.New("meta: total length is 0; at least one file must be non-empty")
	}
	pieces := (total + i.PieceLength - 1) / i.PieceLength
	if pieces > MaxPieces {
		return fmt.Errorf("meta: %d pieces exceed the limit of %d", pieces, MaxPieces)
	}
	if len(i.Pieces)%sha1.Size != 0 {
		return fmt.Errorf("meta: pieces string is %d bytes, not a multiple of %d", len(i.Pieces), sha1.Size)
	}
	if int64(len(i.Pieces)) != pieces*sha1.Size {
		return fmt.Errorf("meta: pieces string holds %d hashes; %d bytes with piece length %d need %d",
			len(i.Pieces)/sha1.Size, total, i.PieceLength, pieces)
	}
	return nil
}

func checkPieceLength(n int64) error {
	if n < minPieceLength || n > maxPieceLength || n&(n-1) != 0 {
		return fmt.Errorf("meta: piece length %d is not a power of two between 16 KiB and 16 MiB", n)
	}
	return nil
}

// checkElement reports whether s is safe as a single path element on any
// platform we write files on.
func checkElement(s string) error {
	switch {
	case s == "":
		return errors.New("empty path element")
	case s == "." || s == "..":
		return fmt.Errorf("path element %q is not allowed", s)
	case strings.ContainsAny(s, "/\\\x00"):
		return fmt.Errorf("path element %q contains a slash, backslash or NUL", truncate(s, 64))
	}
	return nil
}

func checkFiles(files []File) (int64, error) {
	var total int64
	for k, f := range files {
		if f.Length < 0 {
			return 0, fmt.Errorf("meta: file %d has negative length %d", k, f.Length)
		}
		if f.Length > maxTotalLength-total {
			return 0, fmt.Errorf("meta: total length exceeds the %d-byte limit", int64(maxTotalLength))
		}
		total += f.Length
		if len(f.Path) == 0 {
			return 0, fmt.Errorf("meta: file %d has an empty path", k)
		}
		for _, e := range f.Path {
			if err := checkElement(e); err != nil {
				return 0, fmt.Errorf("meta: file %d path: %w", k, err)
			}
		}
	}
	// In element-wise lexicographic order, a path that is a prefix of
	// another is immediately followed by a path it is a prefix of (or by an
	// equal one), so comparing neighbours finds every conflict.
	order := make([]int, len(files))
	for k := range order {
		order[k] = k
	}
	slices.SortFunc(order, func(a, b int) int { return slices.Compare(files[a].Path, files[b].Path) })
	for k := 1; k < len(order); k++ {
		a, b := files[order[k-1]].Path, files[order[k]].Path
		if len(a) <= len(b) && slices.Equal(a, b[:len(a)]) {
			if len(a) == len(b) {
				return 0, fmt.Errorf("meta: duplicate file path %q", truncate(strings.Join(a, "/"), 256))
			}
			return 0, fmt.Errorf("meta: file path %q is also used as a directory by %q",
				truncate(strings.Join(a, "/"), 256), truncate(strings.Join(b, "/"), 256))
		}
	}
	return total, nil
}

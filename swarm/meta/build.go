package meta

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// progressEvery is how often (in bytes hashed) Build reports progress.
const progressEvery = 4 << 20

type buildFile struct {
	osPath string
	info   fs.FileInfo
	File
}

// Build hashes the regular file or the directory tree at path into an
// Info. A directory is walked recursively and its regular files listed in
// path order; symbolic links and special files are refused, as is a tree
// without content. pieceLength 0 means AutoPieceLength of the content's
// size; otherwise it must be a power of two between 16 KiB and 16 MiB. progress, if not nil,
// is called with (bytesHashed, totalBytes) at the start, at least every
// 4 MiB, and at the end.
func Build(path string, pieceLength int64, progress func(done, total int64)) (*Info, error) {
	auto := pieceLength == 0
	if !auto {
		if err := checkPieceLength(pieceLength); err != nil {
			return nil, err
		}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	root, err := os.Lstat(abs)
	if err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	info := &Info{Name: filepath.Base(abs), PieceLength: pieceLength}
	if err := checkElement(info.Name); err != nil {
		return nil, fmt.Errorf("meta: cannot name a torrent after %q: %w", path, err)
	}

	var files []buildFile
	switch mode := root.Mode(); {
	case mode.IsRegular():
		files = []buildFile{{osPath: abs, info: root, File: File{Length: root.Size()}}}
	case mode.IsDir():
		if files, err = walk(abs); err != nil {
			return nil, err
		}
	default:
		return nil, notRegular(path, mode)
	}

	var total int64
	for _, f := range files {
		if f.Length > maxTotalLength-total {
			return nil, fmt.Errorf("meta: %s: content exceeds the %d-byte limit", path, int64(maxTotalLength))
		}
		total += f.Length
	}
	if total == 0 {
		return nil, fmt.Errorf("meta: %s has no content to share (all files are empty)", path)
	}
	if auto {
		pieceLength = AutoPieceLength(total)
		info.PieceLength = pieceLength
	}
	if n := (total + pieceLength - 1) / pieceLength; n > MaxPieces {
		return nil, fmt.Errorf("meta: %s needs %d pieces of %d bytes, more than the limit of %d; use a larger piece length",
			path, n, pieceLength, MaxPieces)
	}

	pieces, err := hashFiles(files, pieceLength, total, progress)
	if err != nil {
		return nil, err
	}
	info.Pieces = string(pieces)
	if root.IsDir() {
		info.Files = make([]File, len(files))
		for k, f := range files {
			info.Files[k] = f.File
		}
	} else {
		info.Length = total
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("meta: cannot share %s: %w", path, err)
	}
	return info, nil
}

// AutoPieceLength is the piece length for content of total bytes:
// DefaultPieceLength, halved to 128 KiB while the content would have fewer
// than autoFewPieces pieces, and on down to 32 KiB while it would have
// fewer than autoMinPieces. A small file in large pieces leaves a big
// swarm with too few pieces to trade: each piece must reach every peer,
// and a leecher often holds nothing its neighbours lack; and a leecher
// uploads nothing until its first piece is whole, so large pieces leave
// the crowd idle longer at the start.
//
// Measured with `peer bench swarm --seed-up 4MiB/s --peer-up 1MiB/s`
// (ratio to the bound, pairs alternating in one run): 16 MiB in 128 KiB
// rather than 256 KiB pieces gave 1.02 vs 1.03 at 8 peers, 1.03 vs 1.05
// at 16, 1.04 vs 1.06 at 32 and 1.06 vs 1.11 at 64; 32 MiB gave 1.018 vs
// 1.027 at 16 peers (medians of 3), 1.02 vs 1.03 with the CPU contended,
// and 1.025 vs 1.057 at 32 peers; 64 MiB to 31 peers, 1.020 vs 1.024,
// so the step to 256 KiB comes at 64 MiB. 8 MiB at 64 peers in
// 128 KiB rather than 256 KiB gave 1.16 vs 1.21; 64 KiB was a little
// better on a quiet machine (1.10 vs 1.11) but worse under contention
// (1.29 and 1.51 vs 1.20 and 1.28), where each piece's HAVE to every
// neighbour costs CPU, so pieces go below 128 KiB only for content that
// would otherwise have fewer than 64.
func AutoPieceLength(total int64) int64 {
	pl := int64(DefaultPieceLength)
	for pl > autoMinPieceLength && (total/pl < autoMinPieces || (pl > autoFewPieceLength && total/pl < autoFewPieces)) {
		pl /= 2
	}
	return pl
}

const (
	autoMinPieces      = 64
	autoMinPieceLength = 32 << 10
	autoFewPieces      = 256
	autoFewPieceLength = 128 << 10
)

func notRegular(path string, mode fs.FileMode) error {
	if mode&fs.ModeSymlink != 0 {
		return fmt.Errorf("meta: %s is a symbolic link; only regular files and directories can be shared", path)
	}
	return fmt.Errorf("meta: %s is a special file (%v); only regular files and directories can be shared", path, mode.Type())
}

// walk lists the regular files under dir, sorted by path.
func walk(dir string) ([]buildFile, error) {
	var files []buildFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("meta: %w", err)
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return notRegular(p, d.Type())
		}
		fi, err := d.Info()
		if err != nil {
			return fmt.Errorf("meta: %w", err)
		}
		if !fi.Mode().IsRegular() { // replaced since the directory was read
			return notRegular(p, fi.Mode())
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("meta: %w", err)
		}
		elems := strings.Split(filepath.ToSlash(rel), "/")
		for _, e := range elems {
			if err := checkElement(e); err != nil {
				return fmt.Errorf("meta: cannot share %s: %w", p, err)
			}
		}
		files = append(files, buildFile{osPath: p, info: fi, File: File{Length: fi.Size(), Path: elems}})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("meta: directory %s contains no regular files", dir)
	}
	slices.SortFunc(files, func(a, b buildFile) int { return slices.Compare(a.Path, b.Path) })
	return files, nil
}

// hashFiles hashes the concatenation of files in pieces of pieceLength.
func hashFiles(files []buildFile, pieceLength, total int64, progress func(done, total int64)) ([]byte, error) {
	numPieces := (total + pieceLength - 1) / pieceLength
	pieces := make([]byte, 0, numPieces*sha1.Size)
	buf := make([]byte, pieceLength)
	fill := 0
	var done, reported int64
	if progress != nil {
		progress(0, total)
	}
	for _, f := range files {
		if f.Length == 0 {
			continue
		}
		fh, err := openSame(f)
		if err != nil {
			return nil, err
		}
		left := f.Length
		for left > 0 {
			n := int(min(int64(len(buf)-fill), left))
			if _, err := io.ReadFull(fh, buf[fill:fill+n]); err != nil {
				fh.Close()
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					return nil, fmt.Errorf("meta: %s shrank while being hashed", f.osPath)
				}
				return nil, fmt.Errorf("meta: reading %s: %w", f.osPath, err)
			}
			fill += n
			left -= int64(n)
			done += int64(n)
			if fill == len(buf) {
				sum := sha1.Sum(buf)
				pieces = append(pieces, sum[:]...)
				fill = 0
			}
			if progress != nil && done-reported >= progressEvery {
				progress(done, total)
				reported = done
			}
		}
		// A file that grew would give content the manifest does not list.
		var one [1]byte
		n, _ := fh.Read(one[:])
		fh.Close()
		if n > 0 {
			return nil, fmt.Errorf("meta: %s grew while being hashed", f.osPath)
		}
	}
	if fill > 0 {
		sum := sha1.Sum(buf[:fill])
		pieces = append(pieces, sum[:]...)
	}
	if progress != nil && reported != done {
		progress(done, total)
	}
	return pieces, nil
}

// openSame opens f and checks it is still the regular file that was listed.
func openSame(f buildFile) (*os.File, error) {
	fh, err := os.Open(f.osPath)
	if err != nil {
		return nil, fmt.Errorf("meta: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("meta: %w", err)
	}
	if !st.Mode().IsRegular() || !os.SameFile(st, f.info) {
		fh.Close()
		return nil, fmt.Errorf("meta: %s was replaced while being hashed", f.osPath)
	}
	return fh, nil
}

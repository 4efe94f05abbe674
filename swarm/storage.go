package swarm

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/swarm/meta"
)

// Storage maps pieces onto the files of a manifest under root: root is the
// file itself for a single-file manifest, else the directory holding the
// tree. Reads and writes go straight to the files at their offsets.
type Storage struct {
	info     *meta.Info
	root     string
	writable bool

	mu    sync.Mutex
	spans []meta.Span
	files []*os.File // opened lazily, index as spans

	// writeAt, when set, writes in place of the file's WriteAt: tests
	// make a disk that fills with it.
	writeAt func(f *os.File, b []byte, off int64) (int, error)

	unflushed atomic.Int64 // bytes written since the last background flush
	flushing  atomic.Bool
	bg        sync.WaitGroup
}

// OpenStorage opens the data of info under root. A writable storage creates
// missing directories and files at their full length (sparse) and
// reserves their blocks where the file system can; a download that does
// not fit is refused with a NoSpaceError before any file is made. A
// read-only one requires every file to exist with its length.
func OpenStorage(info *meta.Info, root string, writable bool) (st *Storage, err error) {
	s := &Storage{info: info, root: root, writable: writable, spans: info.Spans()}
	s.files = make([]*os.File, len(s.spans))
	var created []string
	defer func() {
		if err != nil {
			// Leave the disk as it was: close what was opened and
			// remove the files this call created.
			s.Close()
			for _, p := range created {
				os.Remove(p)
			}
			// A space error tells how much is free once this call's
			// files are gone again.
			var ns *NoSpaceError
			if errors.As(err, &ns) && ns.Free < 0 {
				ns.Free = freeSpace(ns.Path)
			}
		}
	}()
	var need int64
	if writable {
		need = s.unwritten()
	}
	if need > 0 && DiskFree != nil {
		// Refuse at once what cannot fit, before any file is made: a
		// file system that cannot reserve blocks would otherwise fill up
		// half-way through.
		if free, ferr := DiskFree(existingParent(root)); ferr == nil && free < need {
			return nil, &NoSpaceError{Op: OpReserve, Path: root, Need: need, Free: free, Err: syscall.ENOSPC}
		}
	}
	for i := range s.spans {
		p := s.path(i)
		fi, err := os.Stat(p)
		switch {
		case err == nil && !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%s is not a regular file", p)
		case err == nil && !writable && fi.Size() != s.spans[i].Length:
			return nil, fmt.Errorf("%s is %d bytes, the manifest says %d: it changed since it was shared", p, fi.Size(), s.spans[i].Length)
		case errors.Is(err, os.ErrNotExist) && !writable:
			return nil, fmt.Errorf("%s is missing: %w", p, err)
		case err != nil && !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
		if !writable {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		s.files[i] = f
		if fi == nil {
			created = append(created, p)
		}
		if fi == nil || fi.Size() != s.spans[i].Length {
			if err := f.Truncate(s.spans[i].Length); err != nil {
				if isNoSpace(err) {
					return nil, &NoSpaceError{Op: OpReserve, Path: root, Need: max(need, s.spans[i].Length), Free: -1, Err: errno(err)}
				}
				return nil, fmt.Errorf("size %s: %w", p, err)
			}
		}
		if err := preallocate(f, s.spans[i].Length); err != nil {
			if isNoSpace(err) {
				return nil, &NoSpaceError{Op: OpReserve, Path: root, Need: max(need, s.spans[i].Length), Free: -1, Err: errno(err)}
			}
			return nil, fmt.Errorf("reserve %s for %s: %w", units.FormatBytes(float64(s.spans[i].Length)), p, err)
		}
	}
	return s, nil
}

// path is where span i lives on disk.
func (s *Storage) path(i int) string {
	if s.info.Files == nil {
		return s.root
	}
	// Spans start with the manifest's name, which root already stands for.
	return filepath.Join(append([]string{s.root}, s.spans[i].Path[1:]...)...)
}

func (s *Storage) file(i int) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files[i] != nil {
		return s.files[i], nil
	}
	f, err := os.Open(s.path(i))
	if err != nil {
		return nil, err
	}
	s.files[i] = f
	return f, nil
}

// io runs fn over the file pieces that the range [off, off+n) of the whole
// stream covers.
func (s *Storage) io(off int64, b []byte, fn func(f *os.File, b []byte, off int64) error) error {
	if off < 0 || off+int64(len(b)) > s.info.TotalLength() {
		return fmt.Errorf("range %d+%d outside the %d bytes of %s", off, len(b), s.info.TotalLength(), s.info.Name)
	}
	for i, sp := range s.spans {
		if len(b) == 0 {
			break
		}
		if off >= sp.Offset+sp.Length || sp.Length == 0 {
			continue
		}
		n := min(int64(len(b)), sp.Offset+sp.Length-off)
		f, err := s.file(i)
		if err != nil {
			return err
		}
		if err := fn(f, b[:n], off-sp.Offset); err != nil {
			return err
		}
		b, off = b[n:], off+n
	}
	return nil
}

// ReadBlock reads len(b) bytes at begin within piece.
func (s *Storage) ReadBlock(piece int, begin int64, b []byte) error {
	if err := s.checkBlock(piece, begin, len(b)); err != nil {
		return err
	}
	return s.io(int64(piece)*s.info.PieceLength+begin, b, func(f *os.File, b []byte, off int64) error {
		_, err := f.ReadAt(b, off)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	})
}

// ReadAt reads len(b) bytes at off of the whole stream (the files end to
// end).
func (s *Storage) ReadAt(b []byte, off int64) error {
	return s.io(off, b, func(f *os.File, b []byte, off int64) error {
		_, err := f.ReadAt(b, off)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	})
}

// WriteBlock writes b at begin within piece.
func (s *Storage) WriteBlock(piece int, begin int64, b []byte) error {
	if !s.writable {
		return fmt.Errorf("%s is shared read-only", s.root)
	}
	if err := s.checkBlock(piece, begin, len(b)); err != nil {
		return err
	}
	err := s.io(int64(piece)*s.info.PieceLength+begin, b, func(f *os.File, b []byte, off int64) error {
		write := f.WriteAt
		if s.writeAt != nil {
			write = func(b []byte, off int64) (int, error) { return s.writeAt(f, b, off) }
		}
		if _, err := write(b, off); err != nil {
			if isNoSpace(err) {
				// Need is what the swarm still lacks, which only it
				// knows: it fills that in.
				return &NoSpaceError{Op: OpWrite, Path: f.Name(), Free: freeSpace(f.Name()), Err: errno(err)}
			}
			return err
		}
		return nil
	})
	if err == nil {
		s.wrote(len(b))
	}
	return err
}

func (s *Storage) checkBlock(piece int, begin int64, n int) error {
	if piece < 0 || piece >= s.info.NumPieces() {
		return fmt.Errorf("piece %d out of range (%d pieces)", piece, s.info.NumPieces())
	}
	if begin < 0 || n < 0 || begin+int64(n) > s.info.PieceSize(piece) {
		return fmt.Errorf("block %d+%d outside piece %d of %d bytes", begin, n, piece, s.info.PieceSize(piece))
	}
	return nil
}

// Verify reads piece and reports whether its SHA-1 matches the manifest.
func (s *Storage) Verify(piece int) (bool, error) {
	buf := make([]byte, s.info.PieceSize(piece))
	if err := s.ReadBlock(piece, 0, buf); err != nil {
		return false, err
	}
	return sha1.Sum(buf) == s.info.PieceHash(piece), nil
}

// Sync flushes written data to disk.
func (s *Storage) Sync() error {
	if !s.writable {
		return nil
	}
	var first error
	for _, f := range s.openFiles() {
		if err := f.Sync(); err != nil && first == nil {
			first = err
			if isNoSpace(err) {
				first = &NoSpaceError{Op: OpFlush, Path: f.Name(), Free: freeSpace(f.Name()), Err: errno(err)}
			}
		}
	}
	return first
}

// openFiles returns the files opened so far.
func (s *Storage) openFiles() []*os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*os.File
	for _, f := range s.files {
		if f != nil {
			out = append(out, f)
		}
	}
	return out
}

// flushEvery is how much is written between background flushes: the disk
// takes the data while the rest arrives, and the flush before the final
// rename has only the last of it to wait for. Where the system lets us
// start writeback without waiting for it (Linux), this is cheap, and a
// small step keeps the final flush short even for small files: 32 peers
// finishing 16 MiB each together spent 0.1-0.2 s in their final flushes.
const flushEvery = flushStep

// wrote counts n bytes written and starts a background flush when enough
// have piled up since the last one.
func (s *Storage) wrote(n int) {
	if s.unflushed.Add(int64(n)) < flushEvery || !s.flushing.CompareAndSwap(false, true) {
		return
	}
	s.unflushed.Store(0)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer s.flushing.Store(false)
		for _, f := range s.openFiles() {
			// An error here shows again in the final flush, which
			// reports it.
			_ = startWriteback(f)
		}
	}()
}

// Close closes the files.
func (s *Storage) Close() error {
	s.bg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for i, f := range s.files {
		if f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = err
			}
			s.files[i] = nil
		}
	}
	return first
}

// DiskFree, when set, reports how many bytes the file system holding path
// has free for this process (statfs on Unix; the node sets it). Without
// it a full disk is still reported, only without the figure of what is
// free, and nothing is refused before the disk says so itself.
var DiskFree func(path string) (int64, error)

// Operations a NoSpaceError can come from.
const (
	OpReserve = "reserve" // making room for the download before it starts
	OpWrite   = "write"   // writing a verified piece
	OpFlush   = "flush"   // flushing written data to the disk
)

// NoSpaceError is a download that does not fit on its disk, or in its
// owner's quota: found before it started (OpReserve), or when a piece or a
// flush did not fit (OpWrite, OpFlush). The pieces verified before it are
// kept, so the download can go on once there is room.
type NoSpaceError struct {
	Op   string
	Path string // the file or directory that did not fit
	Need int64  // bytes still to store; 0 if not known
	Free int64  // bytes free on its file system; -1 if not known
	Err  error  // syscall.ENOSPC or syscall.EDQUOT
}

func (e *NoSpaceError) Error() string {
	var b strings.Builder
	quota := errors.Is(e.Err, syscall.EDQUOT)
	switch {
	case e.Op == OpReserve && quota:
		fmt.Fprintf(&b, "not enough disk quota for %s", e.Path)
	case e.Op == OpReserve:
		fmt.Fprintf(&b, "not enough disk space for %s", e.Path)
	default:
		what := "no space left on device"
		if quota {
			what = "disk quota exceeded"
		}
		verb := "writing"
		if e.Op == OpFlush {
			verb = "flushing"
		}
		fmt.Fprintf(&b, "%s %s %s", what, verb, e.Path)
	}
	var figures []string
	if e.Need > 0 {
		figures = append(figures, "need "+units.FormatBytes(float64(e.Need))+" more")
	}
	if e.Free >= 0 {
		figures = append(figures, units.FormatBytes(float64(e.Free))+" free")
	}
	if len(figures) > 0 {
		b.WriteString(": " + strings.Join(figures, ", "))
	}
	return b.String()
}

func (e *NoSpaceError) Unwrap() error { return e.Err }

// IsNoSpaceMessage reports whether msg, the text of a swarm's error as
// its status carries it, says that the download did not fit (NoSpaceError).
func IsNoSpaceMessage(msg string) bool {
	for _, p := range []string{"not enough disk space for ", "not enough disk quota for ",
		"no space left on device writing ", "no space left on device flushing ",
		"disk quota exceeded writing ", "disk quota exceeded flushing "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// isNoSpace reports whether err is a full disk or an exhausted quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// errno is ENOSPC or EDQUOT, whichever err is.
func errno(err error) error {
	if errors.Is(err, syscall.EDQUOT) {
		return syscall.EDQUOT
	}
	return syscall.ENOSPC
}

// freeSpace is DiskFree of path's file system, -1 if it cannot say.
func freeSpace(path string) int64 {
	if DiskFree == nil {
		return -1
	}
	free, err := DiskFree(existingParent(path))
	if err != nil {
		return -1
	}
	return free
}

// existingParent is path, or its nearest ancestor that exists: what a
// file system can be asked about before the download's files are made.
func existingParent(path string) string {
	for {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		parent := filepath.Dir(path)
		if parent == path {
			return path
		}
		path = parent
	}
}

// unwritten is how many bytes the files of the download still have to
// grow by: all of a file that does not exist yet, the rest of one that is
// shorter than the manifest says. A file of full length (a download
// resumed) counts as stored: where blocks can be reserved it holds them,
// and elsewhere a later write that does not fit is reported then.
func (s *Storage) unwritten() int64 {
	var n int64
	for i, sp := range s.spans {
		fi, err := os.Stat(s.path(i))
		switch {
		case errors.Is(err, os.ErrNotExist):
			n += sp.Length
		case err == nil && fi.Mode().IsRegular() && fi.Size() < sp.Length:
			n += sp.Length - fi.Size()
		}
	}
	return n
}

package swarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/peer-overlay/peer/internal/atomicfile"
	"github.com/peer-overlay/peer/swarm/meta"
)

// state is what a swarm keeps in StateDir/<infohash>/state.json, beside
// the manifest in StateDir/<infohash>/manifest, so a restarted peer picks
// up where it stopped.
type state struct {
	Name         string  `json:"name"`
	OutDir       string  `json:"out_dir,omitempty"`
	Path         string  `json:"path,omitempty"`
	Complete     bool    `json:"complete"`
	Have         []byte  `json:"have,omitempty"`
	UploadRate   float64 `json:"upload_rate,omitempty"`
	DownloadRate float64 `json:"download_rate,omitempty"`
}

func (s *Swarm) save() error {
	s.mu.Lock()
	st, raw, ok := s.snapshotLocked()
	s.mu.Unlock()
	if !ok {
		return nil
	}
	return s.writeState(st, raw)
}

// saveLocked is save with s.mu held (the files are written under it).
func (s *Swarm) saveLocked() error {
	st, raw, ok := s.snapshotLocked()
	if !ok {
		return nil
	}
	return s.writeState(st, raw)
}

// snapshotLocked is what save writes; ok is false when there is nothing to
// write: no StateDir, or a swarm that failed before it had its manifest,
// whose saved state (from when it started, or from an earlier run that
// had got further) says all there is to say.
func (s *Swarm) snapshotLocked() (st state, raw []byte, ok bool) {
	if s.m.cfg.StateDir == "" || (s.failed != nil && s.info == nil) {
		return st, nil, false
	}
	st = state{Name: s.name, OutDir: s.outDir, Path: s.final, Complete: s.complete}
	if s.have != nil {
		st.Have = append([]byte(nil), s.have...)
	}
	if s.up != nil {
		st.UploadRate = float64(s.up.l.Limit())
	}
	if s.down != nil {
		st.DownloadRate = float64(s.down.l.Limit())
	}
	s.dirty = false
	return st, s.infoRaw, true
}

func (s *Swarm) writeState(st state, raw []byte) error {
	d := filepath.Join(s.m.cfg.StateDir, s.hash.String())
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("save the progress of %s: %w", s.hash, err)
	}
	if raw != nil {
		if _, err := os.Stat(filepath.Join(d, "manifest")); errors.Is(err, os.ErrNotExist) {
			if err := writeAtomic(filepath.Join(d, "manifest"), raw); err != nil {
				return err
			}
		}
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(d, "state.json"), b)
}

// writeAtomic replaces path with b (see atomicfile.Write), naming a full
// disk in the error.
func writeAtomic(path string, b []byte) error {
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return saveError(path, err)
	}
	return nil
}

func saveError(path string, err error) error {
	if isNoSpace(err) {
		what := "no space left on device"
		if errors.Is(err, syscall.EDQUOT) {
			what = "disk quota exceeded"
		}
		return fmt.Errorf("save %s: %s; the copy saved before is kept: %w", path, what, errno(err))
	}
	return fmt.Errorf("save %s: %w", path, err)
}

// haltLocked is the end of a download that failed (failLocked): every bit
// of the swarm's work stops, so that nothing is dialled, asked for or
// fetched again, and the progress is saved at once, so that the pieces
// verified so far are kept for Restart. A full disk is reported as the
// NoSpaceError itself, which names the file and the space needed.
func (s *Swarm) haltLocked() {
	s.cancel()
	var ns *NoSpaceError
	if errors.As(s.failed, &ns) {
		if ns.Need <= 0 && s.info != nil && ns.Op != OpFlush {
			ns.Need = s.missingLocked()
		}
		s.failed = ns
	}
	if err := s.saveLocked(); err != nil {
		s.log.Error("saving progress", "err", err)
		s.failed = fmt.Errorf("%w; saving the progress failed too: %v", s.failed, err)
	}
}

// missingLocked is how many bytes of the data the swarm does not have.
func (s *Swarm) missingLocked() int64 {
	var n int64
	for i := range s.info.NumPieces() {
		if !s.have.Has(i) {
			n += s.info.PieceSize(i)
		}
	}
	return n
}

// restartMu makes restarts one at a time.
var restartMu sync.Mutex

// Restart starts again a download of h that failed (a full disk, say):
// the pieces it had verified are checked and kept, and only the others
// are fetched. A failed download no longer listed (its resume failed when
// the peer started) restarts from its state in StateDir. dir, when not "",
// is where the caller wants the data: a failed download that was going
// elsewhere is not moved, and says so.
//
// ok is false when there is nothing to restart (h runs, is complete, or
// is unknown here): the caller goes on with Get. When the restart fails
// again, the download stays listed with the new error, and what was saved
// of it stays as it was.
func (m *Manager) Restart(h meta.InfoHash, dir string) (s *Swarm, ok bool, err error) {
	restartMu.Lock()
	defer restartMu.Unlock()
	old := m.Swarm(h)
	if old == nil {
		return m.restartSaved(h, dir)
	}
	if old.Err() == nil {
		return old, false, nil
	}
	old.mu.Lock()
	outDir, name, info, raw := old.outDir, old.name, old.info, old.infoRaw
	have := append([]byte(nil), old.have...)
	var o ShareOptions
	if old.up != nil {
		o.UploadRate = float64(old.up.l.Limit())
	}
	if old.down != nil {
		o.DownloadRate = float64(old.down.l.Limit())
	}
	old.mu.Unlock()
	if err := sameDir(h, outDir, dir); err != nil {
		return old, true, err
	}
	m.mu.Lock()
	if m.swarms[h] == old {
		delete(m.swarms, h)
	}
	m.mu.Unlock()
	// Its connections are closed already; this waits for the last of its
	// goroutines, saves its progress and closes its files.
	if err := old.stop(); err != nil {
		m.log.Warn("stopping a failed swarm", "swarm", h, "err", err)
	}
	s = m.newSwarm(h, o)
	s.outDir, s.name = outDir, name
	if info != nil {
		err = s.prepare(info, raw, have)
	}
	if err == nil {
		err = m.add(s)
	}
	if err != nil {
		s.closeStorage()
		s.cancel()
		var ns *NoSpaceError
		if errors.As(err, &ns) {
			err = ns // it names the file already
		}
		old.mu.Lock()
		old.failed = err
		old.mu.Unlock()
		m.putBack(old)
		return old, true, err
	}
	return s, true, nil
}

// restartSaved resumes h from StateDir when a download of it was saved
// there but is not running (its resume failed when the peer started):
// without this, a new Get would start it afresh and save over its
// progress.
func (m *Manager) restartSaved(h meta.InfoHash, dir string) (*Swarm, bool, error) {
	if m.cfg.StateDir == "" {
		return nil, false, nil
	}
	d := filepath.Join(m.cfg.StateDir, h.String())
	b, err := os.ReadFile(filepath.Join(d, "state.json"))
	if err != nil {
		return nil, false, nil
	}
	var st state
	if json.Unmarshal(b, &st) != nil || st.Complete || st.OutDir == "" {
		return nil, false, nil
	}
	if err := sameDir(h, st.OutDir, dir); err != nil {
		return nil, true, err
	}
	s, err := m.resume(h, d)
	if err != nil {
		var ns *NoSpaceError
		if errors.As(err, &ns) {
			err = ns
		}
		// Keep it listed, failed, so that `peer swarms` shows why; it
		// saves nothing over the state it came from (no manifest).
		s = m.newSwarm(h, ShareOptions{})
		s.outDir, s.name = st.OutDir, st.Name
		s.failed = err
		close(s.done)
		s.cancel()
		m.putBack(s)
		return s, true, err
	}
	return s, true, nil
}

// putBack lists a failed swarm again, unless another took its place.
func (m *Manager) putBack(s *Swarm) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.swarms[s.hash]; !ok {
		m.swarms[s.hash] = s
	}
}

// sameDir checks that a download going to have is asked for in want (""
// means anywhere).
func sameDir(h meta.InfoHash, have, want string) error {
	if want == "" {
		return nil
	}
	abs, err := filepath.Abs(want)
	if err != nil {
		return err
	}
	if filepath.Clean(abs) != filepath.Clean(have) {
		return fmt.Errorf("%s was being fetched into %s, where its verified pieces are: fetch it again with -o %s, or remove it first", h, have, have)
	}
	return nil
}

// Resume restarts every swarm saved in StateDir: complete ones seed from
// their path, others carry on downloading after checking the pieces they
// had. It returns the swarms resumed and one error per swarm that could
// not be.
func (m *Manager) Resume() ([]*Swarm, []error) {
	dir := m.cfg.StateDir
	if dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var out []*Swarm
	var errs []error
	for _, e := range ents {
		h, err := meta.ParseInfoHash(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		s, err := m.resume(h, filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, fmt.Errorf("resume %s: %w", h, err))
			continue
		}
		out = append(out, s)
	}
	return out, errs
}

func (m *Manager) resume(h meta.InfoHash, d string) (*Swarm, error) {
	b, err := os.ReadFile(filepath.Join(d, "state.json"))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(d, "state.json"), err)
	}
	raw, err := os.ReadFile(filepath.Join(d, "manifest"))
	var info *meta.Info
	if err == nil {
		if info, err = meta.DecodeInfo(raw); err != nil {
			return nil, err
		}
		if info.Hash() != h {
			return nil, fmt.Errorf("saved manifest does not match its infohash")
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if st.Complete && info != nil {
		return m.Seed(info, st.Path, ShareOptions{UploadRate: st.UploadRate, DownloadRate: st.DownloadRate, NoSuperSeed: true})
	}
	if info != nil && st.OutDir != "" && renamedWhole(info, filepath.Join(st.OutDir, info.Name)) {
		// The download finished and took its final name, but stopped before
		// its state said so: seed what verifies whole.
		return m.Seed(info, filepath.Join(st.OutDir, info.Name), ShareOptions{UploadRate: st.UploadRate, DownloadRate: st.DownloadRate, NoSuperSeed: true})
	}
	if st.OutDir == "" {
		return nil, fmt.Errorf("no output directory saved")
	}
	s := m.newSwarm(h, ShareOptions{UploadRate: st.UploadRate, DownloadRate: st.DownloadRate})
	s.outDir, s.name = st.OutDir, st.Name
	if info != nil {
		if err := s.prepare(info, raw, st.Have); err != nil {
			return nil, err
		}
	}
	if err := m.add(s); err != nil {
		s.closeStorage()
		return nil, err
	}
	return s, nil
}

// renamedWhole reports whether final exists with no .part beside it and
// every piece of info verifies in it.
func renamedWhole(info *meta.Info, final string) bool {
	if _, err := os.Lstat(final + ".part"); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	st, err := OpenStorage(info, final, false)
	if err != nil {
		return false
	}
	defer st.Close()
	for i := range info.NumPieces() {
		if ok, err := st.Verify(i); err != nil || !ok {
			return false
		}
	}
	return true
}

package swarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	dir := s.m.cfg.StateDir
	if dir == "" {
		return nil
	}
	s.mu.Lock()
	st := state{Name: s.name, OutDir: s.outDir, Path: s.final, Complete: s.complete}
	if s.have != nil {
		st.Have = append([]byte(nil), s.have...)
	}
	if s.up != nil {
		st.UploadRate = float64(s.up.l.Limit())
	}
	if s.down != nil {
		st.DownloadRate = float64(s.down.l.Limit())
	}
	raw := s.infoRaw
	s.dirty = false
	s.mu.Unlock()
	d := filepath.Join(dir, s.hash.String())
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
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

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save %s: %w", path, err)
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

package swarm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/swarm/meta"
)

// FuzzResumeState writes a saved swarm (state.json and the manifest) as a
// damaged or hand-edited state directory could hold it, and has a new
// Manager resume it. Resume must not panic, must report at most one swarm
// or one error for the one directory, and a resumed swarm claims no more
// pieces than the manifest has.
//
// Only the paths in state.json are rewritten before writing it: a fuzzed
// out_dir or path would make Resume write or read anywhere on the machine.
func FuzzResumeState(f *testing.F) {
	root := f.TempDir()
	hosts, err := p2phost.Loopback(1, "tcp")
	if err != nil {
		f.Fatal(err)
	}
	h := hosts[0]
	f.Cleanup(func() { h.Close() })

	src := filepath.Join(root, "src", "data.bin")
	if _, err := WriteSample(src, 100<<10, 7); err != nil {
		f.Fatal(err)
	}
	info, err := meta.Build(src, 16<<10, nil)
	if err != nil {
		f.Fatal(err)
	}
	manifest, err := info.Encode()
	if err != nil {
		f.Fatal(err)
	}
	seed := func(st state) []byte {
		b, err := json.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(seed(state{Name: info.Name, Path: src, Complete: true, UploadRate: 1 << 20}), manifest)
	f.Add(seed(state{Name: info.Name, OutDir: "out", Have: []byte{0xf0}}), manifest)
	f.Add(seed(state{Name: info.Name, OutDir: "out", Have: []byte{0xff, 0xff, 0xff}}), manifest)
	f.Add(seed(state{Name: "x", OutDir: "out"}), []byte{})
	f.Add([]byte(`{"complete":true}`), manifest)
	f.Add([]byte(`{"have":"!!"}`), []byte("d4:name"))

	n := 0
	f.Fuzz(func(t *testing.T, stateJSON, manifestBytes []byte) {
		n++
		dir := filepath.Join(root, "run")
		os.RemoveAll(dir)
		defer os.RemoveAll(dir)
		stateDir := filepath.Join(dir, "state")
		out := filepath.Join(dir, "out")

		// File the state under the manifest's infohash when it has one.
		var decoded *meta.Info
		hash := info.Hash()
		if i, err := meta.DecodeInfo(manifestBytes); err == nil {
			decoded, hash = i, i.Hash()
		}
		var st state
		if json.Unmarshal(stateJSON, &st) == nil {
			if st.OutDir != "" {
				st.OutDir = out
			}
			if st.Path != "" {
				st.Path = src
			}
			b, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			stateJSON = b
		}
		d := filepath.Join(stateDir, hash.String())
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "state.json"), stateJSON, 0o600); err != nil {
			t.Fatal(err)
		}
		if len(manifestBytes) > 0 {
			if err := os.WriteFile(filepath.Join(d, "manifest"), manifestBytes, 0o600); err != nil {
				t.Fatal(err)
			}
		}

		m := NewManager(h, nil, Config{StateDir: stateDir})
		resumed, errs := m.Resume()
		if len(resumed)+len(errs) > 1 {
			t.Errorf("one saved swarm gave %d swarms and %d errors", len(resumed), len(errs))
		}
		for _, s := range resumed {
			st := s.Status()
			if decoded != nil && (st.Have > decoded.NumPieces() || st.Have < 0) {
				t.Errorf("resumed with %d of %d pieces", st.Have, decoded.NumPieces())
			}
			if decoded == nil && st.Have != 0 {
				t.Errorf("resumed with %d pieces and no manifest", st.Have)
			}
		}
		if err := m.Close(); err != nil {
			t.Logf("close: %v", err)
		}
	})
}

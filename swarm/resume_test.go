package swarm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A download killed after it took its final name but before its state said
// complete (the state is saved once a second) resumes as a seed of the
// file, which it verifies whole, instead of refusing the existing file.
func TestResumeAfterTheRenameBeforeTheState(t *testing.T) {
	dir := t.TempDir()
	src, info := seedFile(t, dir, 1<<20, 4)
	state := filepath.Join(dir, "state")
	ps := startPeers(t, 2, func(i int) Config {
		if i == 0 {
			return Config{}
		}
		return Config{StateDir: state}
	})
	if _, err := ps[0].m.Seed(info, src, ShareOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	s, err := ps[1].m.Get(info.Hash(), out, GetOptions{Info: info})
	if err != nil {
		t.Fatal(err)
	}
	s.AddPeers(ps[0].h.ID())
	waitDone(t, s, 30*time.Second)
	if err := ps[1].m.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(state, info.Hash().String(), "state.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st["complete"] != true {
		t.Fatalf("the state saved on completion does not say complete: %s", b)
	}
	// As if killed between the rename and the save: the state says the
	// download is still under way.
	st["complete"] = false
	b, _ = json.Marshal(st)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	m2 := NewManager(ps[1].h, nil, Config{StateDir: state})
	defer m2.Close()
	resumed, errs := m2.Resume()
	if len(errs) > 0 || len(resumed) != 1 {
		t.Fatalf("resume: %v %v", resumed, errs)
	}
	if got := resumed[0].Status(); !got.Complete || got.Have != info.NumPieces() {
		t.Fatalf("resumed as %+v, want a complete seed", got)
	}
	// A final file that no longer verifies is not seeded.
	m2.Close()
	if err := os.WriteFile(path, b, 0o600); err != nil { // incomplete again
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(out, info.Name), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("corrupt"), 1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m3 := NewManager(ps[1].h, nil, Config{StateDir: state})
	defer m3.Close()
	if resumed, errs := m3.Resume(); len(resumed) != 0 || len(errs) != 1 {
		t.Fatalf("a changed final file resumed: %v, %v", resumed, errs)
	}
}

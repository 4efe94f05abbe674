package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitHomeNewAndExisting(t *testing.T) {
	home := filepath.Join(t.TempDir(), "a", "home")
	created, err := InitHome(home)
	if err != nil || !created {
		t.Fatalf("new home: created=%v err=%v", created, err)
	}
	info, err := os.Stat(filepath.Join(home, IdentityFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("identity: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	id1, err := PeerIDOf(home)
	if err != nil {
		t.Fatal(err)
	}
	// A second init keeps the identity and writes back a missing config.
	if err := os.Remove(filepath.Join(home, ConfigFile)); err != nil {
		t.Fatal(err)
	}
	created, err = InitHome(home)
	if err != nil || created {
		t.Fatalf("existing home: created=%v err=%v", created, err)
	}
	id2, _ := PeerIDOf(home)
	if id1 != id2 {
		t.Fatalf("identity changed: %s then %s", id1, id2)
	}
	if _, err := os.Stat(filepath.Join(home, ConfigFile)); err != nil {
		t.Fatalf("config not written back: %v", err)
	}
}

func TestInitHomeRefusesForeignAndLeavesItAlone(t *testing.T) {
	home := t.TempDir()
	other := filepath.Join(home, "notes.txt")
	if err := os.WriteFile(other, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := InitHome(home)
	if !errors.Is(err, ErrForeignHome) {
		t.Fatalf("got %v, want ErrForeignHome", err)
	}
	entries, _ := os.ReadDir(home)
	if len(entries) != 1 || entries[0].Name() != "notes.txt" {
		t.Fatalf("foreign home was changed: %v", entries)
	}
	file := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(file, nil, 0o600)
	if _, err := InitHome(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("home that is a file: got %v", err)
	}
}

func TestInitHomeInEmptyDir(t *testing.T) {
	home := t.TempDir()
	if created, err := InitHome(home); err != nil || !created {
		t.Fatalf("empty dir: created=%v err=%v", created, err)
	}
}

func TestLoadIdentityRefusesLooseModeAndCorruption(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	if _, err := InitHome(home); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, IdentityFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(home); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("mode 0644: got %v", err)
	}
	_ = os.Chmod(path, 0o600)
	if err := os.WriteFile(path, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIdentity(home); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt key: got %v", err)
	}
	if _, err := LoadIdentity(t.TempDir()); !errors.Is(err, ErrNotHome) {
		t.Fatalf("no key: got %v, want ErrNotHome", err)
	}
}

func TestLockHomeIsExclusive(t *testing.T) {
	home := t.TempDir()
	l, err := lockHome(home)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockHome(home)
	if !errors.Is(err, ErrHomeInUse) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second lock: got %v, want ErrHomeInUse naming the pid", err)
	}
	l.release()
	l2, err := lockHome(home)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}

func TestResolveHome(t *testing.T) {
	t.Setenv("PEER_HOME", "/tmp/from-env")
	if got, _ := ResolveHome("rel"); !filepath.IsAbs(got) || filepath.Base(got) != "rel" {
		t.Errorf("flag: got %s", got)
	}
	if got, _ := ResolveHome(""); got != "/tmp/from-env" {
		t.Errorf("env: got %s", got)
	}
	t.Setenv("PEER_HOME", "")
	t.Setenv("HOME", "/tmp/user")
	if got, _ := ResolveHome(""); got != "/tmp/user/.peer" {
		t.Errorf("default: got %s", got)
	}
}

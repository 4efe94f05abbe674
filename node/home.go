package node

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Files in a peer's home.
const (
	IdentityFile = "identity.key" // Ed25519 private key; marks a home as a peer's
	ConfigFile   = "config.toml"
	lockFile     = "lock"
	controlFile  = "control.json" // where the control API listens, and its token
	socketFile   = "control.sock"
)

// Errors about a home that a user can act on.
var (
	ErrForeignHome = errors.New("is not a peer home: it holds other files and no " + IdentityFile)
	ErrHomeInUse   = errors.New("is in use by another running peer")
	ErrNotHome     = errors.New("is not a peer home yet")
)

// ResolveHome picks the home directory: the flag, else $PEER_HOME, else
// ~/.peer, made absolute.
func ResolveHome(flag string) (string, error) {
	dir := flag
	if dir == "" {
		dir = os.Getenv("PEER_HOME")
	}
	if dir == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --home given, PEER_HOME is unset, and the user's home is unknown: %w", err)
		}
		dir = filepath.Join(h, ".peer")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("home %s: %w", dir, err)
	}
	return abs, nil
}

// InitHome makes dir a peer home: a new Ed25519 identity (mode 0600) and a
// config file with every default written out. An existing home is left as
// it is (a missing config file is written back). A directory holding other
// files is refused. On failure nothing is left half-written: what this call
// created is removed.
func InitHome(dir string) (created bool, err error) {
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return false, fmt.Errorf("home %s: cannot create its parent: %w", dir, err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return false, fmt.Errorf("home %s: %w", dir, err)
		}
		if err := writeHome(dir); err != nil {
			_ = os.RemoveAll(dir)
			return false, err
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("home %s: %w", dir, err)
	case !info.IsDir():
		return false, fmt.Errorf("home %s is a file, not a directory; pass --home with a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("home %s is not readable: %w; check its owner and mode, or pass another --home", dir, err)
	}
	if hasEntry(entries, IdentityFile) {
		if _, err := LoadIdentity(dir); err != nil {
			return false, err
		}
		if !hasEntry(entries, ConfigFile) {
			if err := writeFileAtomic(filepath.Join(dir, ConfigFile), DefaultConfig().Marshal(), 0o600); err != nil {
				return false, fmt.Errorf("home %s: write %s: %w", dir, ConfigFile, err)
			}
		}
		return false, nil
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("home %s %w; pass --home with a new or empty directory", dir, ErrForeignHome)
	}
	if err := writeHome(dir); err != nil {
		_ = os.Remove(filepath.Join(dir, ConfigFile))
		_ = os.Remove(filepath.Join(dir, IdentityFile))
		return false, err
	}
	return true, nil
}

func hasEntry(entries []os.DirEntry, name string) bool {
	for _, e := range entries {
		if e.Name() == name {
			return true
		}
	}
	return false
}

// writeHome writes the config, then the identity: the identity marks the
// home as complete, so it goes last.
func writeHome(dir string) error {
	if err := writeFileAtomic(filepath.Join(dir, ConfigFile), DefaultConfig().Marshal(), 0o600); err != nil {
		return fmt.Errorf("home %s: write %s: %w", dir, ConfigFile, err)
	}
	sk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate identity: %w", err)
	}
	raw, err := crypto.MarshalPrivateKey(sk)
	if err != nil {
		return fmt.Errorf("encode identity: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, IdentityFile), raw, 0o600); err != nil {
		return fmt.Errorf("home %s: write %s: %w", dir, IdentityFile, err)
	}
	return nil
}

// LoadIdentity reads the home's private key. A key that others can read is
// refused, as ssh refuses one.
func LoadIdentity(dir string) (crypto.PrivKey, error) {
	path := filepath.Join(dir, IdentityFile)
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("home %s %w (no %s); run `peer init --home %s` or `peer run`", dir, ErrNotHome, IdentityFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity %s has mode %04o, readable by others; run `chmod 600 %s`", path, info.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	sk, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity %s is corrupt (%v); move it away to make a new identity", path, err)
	}
	if sk.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity %s is a %s key; peer uses Ed25519", path, sk.Type())
	}
	return sk, nil
}

// PeerIDOf reads the peer ID of a home without starting anything.
func PeerIDOf(dir string) (peer.ID, error) {
	sk, err := LoadIdentity(dir)
	if err != nil {
		return "", err
	}
	return peer.IDFromPrivateKey(sk)
}

// errLocked is lockExclusive's answer when another process holds the lock.
var errLocked = errors.New("locked by another process")

// homeLock is an exclusive lock on a home, held while a daemon runs in it.
type homeLock struct{ f *os.File }

// lockHome takes the home's lock or says which process holds it.
func lockHome(dir string) (*homeLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("home %s: lock: %w", dir, err)
	}
	if err := lockExclusive(f); err != nil {
		holder := "another process"
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil {
				holder = fmt.Sprintf("pid %d", pid)
			}
		}
		_ = f.Close()
		if errors.Is(err, errLocked) {
			return nil, fmt.Errorf("home %s %w (%s); stop it, or pass another --home", dir, ErrHomeInUse, holder)
		}
		return nil, fmt.Errorf("home %s: lock: %w", dir, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &homeLock{f: f}, nil
}

func (l *homeLock) release() {
	_ = l.f.Truncate(0)
	unlockFile(l.f)
	_ = l.f.Close()
}

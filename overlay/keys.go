package overlay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/memberlist"
)

// Closed groups. A group whose members hold a cluster key runs memberlist
// with a keyring: every packet and push/pull stream is sealed with the
// primary key (AES-GCM) and must open with one of the installed keys, so a
// peer without a matching key is never let in. The keys are memberlist's
// own; this file only names its failures in plain words and exposes the
// keyring for rotation.

// ClusterKeySize is the length of a cluster key: AES-256.
const ClusterKeySize = 32

// Why a join through a bootstrap peer failed, when it failed on the keys.
// Join's error wraps one of these (with memberlist's own words after it).
var (
	ErrClusterKeyMismatch = errors.New("the group is closed and this peer's cluster key does not match")
	ErrClusterKeyMissing  = errors.New("the group is closed and this peer has no cluster key (set cluster_key)")
	ErrGroupNotClosed     = errors.New("this peer has a cluster key but the group it tried to join is open (its members have none)")
)

// ErrOpenGroup is returned by the key operations of a peer that runs an
// open group: a keyring cannot be installed in a running memberlist.
var ErrOpenGroup = errors.New("this peer runs an open group (no cluster key); set cluster_key and restart it to close the group")

// keyFailures maps what memberlist v0.7.0 says (on the joining side) to
// what it means. The joiner reads the member's answer: sealed with a key
// it does not hold, sealed while it holds none, or plain while it has one.
var keyFailures = []struct {
	says string
	err  error
}{
	{"no installed keys could decrypt", ErrClusterKeyMismatch},
	{"remote state is encrypted and encryption is not configured", ErrClusterKeyMissing},
	{"encryption is configured but remote state is not encrypted", ErrGroupNotClosed},
}

// explainKeyError wraps err in the key failure it shows, if any.
func explainKeyError(err error) error {
	if err == nil {
		return nil
	}
	s := strings.ToLower(err.Error())
	for _, f := range keyFailures {
		if strings.Contains(s, f.says) {
			return fmt.Errorf("%w (memberlist: %s)", f.err, strings.Join(strings.Fields(err.Error()), " "))
		}
	}
	return err
}

// IsClusterKeyError says whether a join failed because of the cluster key.
func IsClusterKeyError(err error) bool {
	return errors.Is(err, ErrClusterKeyMismatch) || errors.Is(err, ErrClusterKeyMissing) || errors.Is(err, ErrGroupNotClosed)
}

func checkKey(k []byte) error {
	if len(k) != ClusterKeySize {
		return fmt.Errorf("a cluster key is %d bytes, not %d", ClusterKeySize, len(k))
	}
	return nil
}

func newKeyring(keys [][]byte) (*memberlist.Keyring, error) {
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	kr, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("cluster keyring: %w", err)
	}
	return kr, nil
}

// KeyFingerprint names a key without giving it away: the first 8 bytes of
// its SHA-256, in hex.
func KeyFingerprint(k []byte) string {
	sum := sha256.Sum256(k)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Closed says whether this peer runs a closed group (it holds a keyring).
func (m *Membership) Closed() bool { return m.keyring() != nil }

func (m *Membership) keyring() *memberlist.Keyring { return m.kr }

// Keys lists the installed keys, the primary first.
func (m *Membership) Keys() [][]byte {
	kr := m.keyring()
	if kr == nil {
		return nil
	}
	return kr.GetKeys()
}

// AddKey installs k beside the others: it is accepted at once, and used to
// seal only after UseKey. Adding a key already installed does nothing.
func (m *Membership) AddKey(k []byte) error {
	kr := m.keyring()
	if kr == nil {
		return ErrOpenGroup
	}
	if err := checkKey(k); err != nil {
		return err
	}
	return kr.AddKey(k)
}

// UseKey makes an installed key the primary.
func (m *Membership) UseKey(k []byte) error {
	kr := m.keyring()
	if kr == nil {
		return ErrOpenGroup
	}
	if !hasKey(kr.GetKeys(), k) {
		return errors.New("that key is not installed; add it first")
	}
	return kr.UseKey(k)
}

// ErrRemovePrimary is returned for removing the key in use.
var ErrRemovePrimary = errors.New("that key is the primary (this peer seals with it); use another key first, then remove this one")

// RemoveKey uninstalls a key that is not the primary.
func (m *Membership) RemoveKey(k []byte) error {
	kr := m.keyring()
	if kr == nil {
		return ErrOpenGroup
	}
	if bytes.Equal(kr.GetPrimaryKey(), k) {
		return ErrRemovePrimary
	}
	if !hasKey(kr.GetKeys(), k) {
		return errors.New("that key is not installed")
	}
	return kr.RemoveKey(k)
}

func hasKey(keys [][]byte, k []byte) bool {
	for _, x := range keys {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

//go:build unix

package node

import (
	"errors"
	"os"
	"syscall"
)

// fileLimit is the process's soft limit on open files.
func fileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0, false
	}
	return uint64(rl.Cur), true
}

// lockExclusive takes an exclusive lock on f without waiting for it;
// errLocked means another process holds it.
func lockExclusive(f *os.File) error {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return errLocked
	}
	return err
}

// unlockFile releases lockExclusive's lock.
func unlockFile(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }

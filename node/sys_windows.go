package node

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// fileLimit is not known on Windows: fdBudget then takes its default.
func fileLimit() (uint64, bool) { return 0, false }

// lockRange is the byte the home lock holds: far past the end of the
// file, so that the holder's process ID in it stays readable to others.
var lockRange = windows.Overlapped{OffsetHigh: 1 << 30}

// lockExclusive takes an exclusive lock on f without waiting for it;
// errLocked means another process holds it.
func lockExclusive(f *os.File) error {
	ol := lockRange
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return errLocked
	}
	return err
}

// unlockFile releases lockExclusive's lock.
func unlockFile(f *os.File) {
	ol := lockRange
	_ = windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

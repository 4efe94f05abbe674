// Package atomicfile replaces a file's contents all at once: the one way
// this project writes its configuration, identity, control token, saved
// swarm state and .torrent files.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm. The bytes go to a new file
// beside path, are flushed to disk (fsync), and only then renamed over
// path, so that a write that fails (a full disk) or a crash at any moment
// leaves either the old file or the new one, never a mix or an empty file.
// Each call has a temporary file of its own, so two writes at once cannot
// mix their bytes. Errors are the os package's, wrapped by the step that
// failed, so errors.Is(err, syscall.ENOSPC) holds for a full disk.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	// The rename itself is durable once the directory is flushed; a
	// directory that cannot be opened or synced (some file systems) does
	// not undo the write.
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

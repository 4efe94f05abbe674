//go:build !linux

package swarm

import "os"

// preallocate is a no-op where the platform has no portable way to reserve
// blocks; files grow as they are written.
func preallocate(f *os.File, size int64) error { return nil }

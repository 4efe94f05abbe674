//go:build !linux

package swarm

import "os"

// preallocate is a no-op where the platform has no portable way to reserve
// blocks; files grow as they are written.
func preallocate(f *os.File, size int64) error { return nil }

// flushStep: a background flush is a full fsync here, so it is rarer.
const flushStep = 32 << 20

// startWriteback flushes f; elsewhere there is no portable way to start
// writeback without waiting for it.
func startWriteback(f *os.File) error { return f.Sync() }

//go:build !unix

package swarmbench

import "time"

// cpuTime is not measured here; the CPU figures of the pair bench read 0.
func cpuTime() time.Duration { return 0 }

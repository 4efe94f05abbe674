//go:build !unix

package stats

import "time"

// CPUTime is not measured here; CPU figures read 0.
func CPUTime() time.Duration { return 0 }

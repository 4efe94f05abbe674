// Package testwait holds the one way tests wait: poll a condition until it
// holds or a deadline passes. There are no fixed sleeps in tests.
package testwait

import (
	"testing"
	"time"
)

// Interval is how often Until polls.
const Interval = 20 * time.Millisecond

// Until polls cond until it returns nil, and fails the test with cond's
// last error once timeout has passed.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(Interval) // poll interval, not a fixed wait
	}
}

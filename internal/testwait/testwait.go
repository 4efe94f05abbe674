// Package testwait holds the one way tests wait: poll a condition until it
// holds or a deadline passes. There are no fixed sleeps in tests.
package testwait

import (
	"errors"
	"testing"
	"time"
)

// Interval is how often Until polls.
const Interval = 20 * time.Millisecond

// Until polls cond every Interval until it returns nil, and fails the test
// with cond's last error once timeout has passed.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	Every(t, timeout, Interval, cond)
}

// Every polls cond every interval until it returns nil, and fails the test
// with cond's last error once timeout has passed. An error that wraps one
// whose Permanent method says true (such as Permanent) fails the test at
// once: waiting cannot fix it (a peer that crashed, a value that is wrong
// rather than missing).
func Every(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		var pe interface{ Permanent() bool }
		if errors.As(err, &pe) && pe.Permanent() {
			t.Fatalf("gave up after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("condition not met within %v; last error: %v", timeout, err)
		}
		time.Sleep(min(interval, left)) // poll interval, not a fixed wait
	}
}

// Permanent marks a condition's error as one that waiting cannot fix.
type Permanent struct{ Err error }

func (e Permanent) Error() string { return e.Err.Error() }
func (e Permanent) Unwrap() error { return e.Err }

// Permanent reports true: waiting cannot fix this error.
func (e Permanent) Permanent() bool { return true }

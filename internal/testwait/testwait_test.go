package testwait

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	n := 0
	Until(t, time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if n != 3 {
		t.Fatalf("polled %d times, want 3", n)
	}
}

func TestPermanentErrorsAreRecognised(t *testing.T) {
	var pe interface{ Permanent() bool }
	wrapped := fmt.Errorf("wrapped: %w", Permanent{Err: errors.New("crashed")})
	if !errors.As(wrapped, &pe) || !pe.Permanent() {
		t.Fatal("a wrapped Permanent error is not recognised as permanent")
	}
}

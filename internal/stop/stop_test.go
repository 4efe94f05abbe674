package stop

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestWithinReturnsTheStepsError(t *testing.T) {
	boom := errors.New("boom")
	err := Within(time.Second, "disk", func() error { return boom })
	if !errors.Is(err, boom) || errors.Is(err, ErrSkipped) {
		t.Fatalf("got %v, want the step's own error", err)
	}
	if err := Within(time.Second, "disk", func() error { return nil }); err != nil {
		t.Fatalf("got %v for a step that succeeded", err)
	}
}

func TestWithinSkipsAStepThatHangs(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	start := time.Now()
	err := Within(50*time.Millisecond, "host", func() error { <-release; return nil })
	if !errors.Is(err, ErrSkipped) {
		t.Fatalf("got %v, want ErrSkipped", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("Within waited %s for a 50 ms deadline", waited)
	}
}

func TestStackClosesInReverseAndNamesWhatItSkipped(t *testing.T) {
	var order []string
	release := make(chan struct{})
	defer close(release)
	var s Stack
	s.Push("lock", func() error { order = append(order, "lock"); return nil })
	s.Push("host", func() error { <-release; return nil })
	s.PushBudget("swarm", func(left time.Duration) error {
		if left <= 0 || left > time.Second {
			t.Errorf("swarm step told %s are left of a 1 s deadline", left)
		}
		order = append(order, "swarm")
		return nil
	})
	err := s.Close(300 * time.Millisecond)
	if !errors.Is(err, ErrSkipped) {
		t.Fatalf("Close: %v, want the hung host step skipped", err)
	}
	// The lock's step ran after the hung one: it still gets its grace.
	if want := []string{"swarm", "lock"}; !reflect.DeepEqual(order, want) {
		t.Fatalf("ran %v, want %v", order, want)
	}
	if got := s.Skipped(); !reflect.DeepEqual(got, []string{"host"}) {
		t.Fatalf("Skipped() = %v, want [host]", got)
	}
	if again := s.Close(time.Second); !errors.Is(again, ErrSkipped) {
		t.Fatalf("a second Close returned %v, want the first one's result", again)
	}
}

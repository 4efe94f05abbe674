// Package stop bounds shutdown. Every stop in this project (the daemon on a
// signal, devnet and demo stopping their peers, a bench's teardown) goes
// through it, so that no library's Close can hold a process forever: a step
// that overruns the deadline is left running in its goroutine, named in the
// returned error, and the process moves on.
package stop

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrSkipped is wrapped by the error of a stop that hit its deadline.
var ErrSkipped = errors.New("stop did not finish in time")

// Within runs fn and waits at most d for it. On time it returns fn's error;
// late, it returns an error naming the step (fn keeps running in the
// background: a Close stuck in a library cannot be cancelled from outside).
func Within(d time.Duration, name string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- fn() }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%s: %w after %s; skipped", name, ErrSkipped, d)
	}
}

// Stack holds closers in the order their layers started and closes them in
// reverse, under one deadline for the whole stack. It is safe for
// concurrent use; Close runs once.
type Stack struct {
	mu      sync.Mutex
	steps   []step
	closed  bool
	errs    error
	skipped []string
	onClose sync.Once
}

type step struct {
	name string
	fn   func(budget time.Duration) error
}

// Push registers fn, to run before everything pushed earlier.
func (s *Stack) Push(name string, fn func() error) {
	s.PushBudget(name, func(time.Duration) error { return fn() })
}

// PushBudget registers fn, which is told how much of the deadline is left
// when its turn comes (for steps that wait themselves, such as a graceful
// leave).
func (s *Stack) PushBudget(name string, fn func(budget time.Duration) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		panic("stop: Push after Close of " + name)
	}
	s.steps = append(s.steps, step{name, fn})
}

// Close runs every step, last pushed first, each bounded by what remains of
// d. A step that overruns is skipped (left running) and the next one starts;
// once the deadline has passed, each remaining step still gets a short grace
// so that cheap closers (files, locks) run. The error joins every step's
// failure and names each step skipped.
func (s *Stack) Close(d time.Duration) error {
	s.onClose.Do(func() {
		s.mu.Lock()
		s.closed = true
		steps := s.steps
		s.steps = nil
		s.mu.Unlock()
		deadline := time.Now().Add(d)
		var errs []error
		for i := len(steps) - 1; i >= 0; i-- {
			st := steps[i]
			left := max(time.Until(deadline), Grace)
			if err := Within(left, st.name, func() error { return st.fn(left) }); err != nil {
				errs = append(errs, err)
				if errors.Is(err, ErrSkipped) {
					s.mu.Lock()
					s.skipped = append(s.skipped, st.name)
					s.mu.Unlock()
				}
			}
		}
		s.errs = errors.Join(errs...)
	})
	return s.errs
}

// Grace is the least time a step gets once the deadline has passed.
const Grace = 200 * time.Millisecond

// Skipped names the steps of the last Close that overran and were left
// running.
func (s *Stack) Skipped() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.skipped...)
}

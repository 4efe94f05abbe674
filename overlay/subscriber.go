package overlay

import "sync"

// subscriber hands events to one consumer through an unbounded queue, so
// that the producer (memberlist, holding its lock) never waits and the
// consumer never misses an event.
type subscriber struct {
	mu     sync.Mutex
	queue  []Event
	closed bool
	wake   chan struct{}
	done   chan struct{}
	out    chan Event
}

func newSubscriber() *subscriber {
	s := &subscriber{
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		out:  make(chan Event),
	}
	go s.pump()
	return s
}

func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	if !s.closed {
		s.queue = append(s.queue, ev)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.done)
}

func (s *subscriber) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		var ev Event
		have := len(s.queue) > 0
		if have {
			ev = s.queue[0]
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
		}
		s.mu.Unlock()
		if !have {
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case s.out <- ev:
		case <-s.done:
			return
		}
	}
}

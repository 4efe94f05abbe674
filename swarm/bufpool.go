package swarm

import "sync"

// bufPool keeps piece-sized buffers for reuse. Each piece passes through a
// buffer twice (assembled on the way in, cached on the way out), and a
// fresh buffer per piece costs more than the copy into it: the allocator
// must zero it, the collector must find it, and on a VM whose idle memory
// is handed back to the host every first touch of a page faults.
type bufPool struct {
	mu    sync.Mutex
	free  map[int][][]byte
	bytes int
	max   int
}

func newBufPool(maxBytes int) *bufPool {
	return &bufPool{free: map[int][][]byte{}, max: maxBytes}
}

// get returns a buffer of n bytes with unspecified contents.
func (p *bufPool) get(n int) []byte {
	p.mu.Lock()
	l := p.free[n]
	if k := len(l); k > 0 {
		b := l[k-1]
		l[k-1] = nil
		p.free[n] = l[:k-1]
		p.bytes -= n
		p.mu.Unlock()
		return b
	}
	p.mu.Unlock()
	return make([]byte, n)
}

// put gives b back; the caller must not touch it afterwards.
func (p *bufPool) put(b []byte) {
	if b == nil {
		return
	}
	b = b[:cap(b)]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+len(b) > p.max {
		return
	}
	p.free[len(b)] = append(p.free[len(b)], b)
	p.bytes += len(b)
}

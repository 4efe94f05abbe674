package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/peer-overlay/peer/names"
)

// Forward is a local port forwarded to a named service.
type Forward struct {
	Name   string `json:"name"`
	Listen string `json:"listen"` // host:port
	Class  string `json:"class,omitempty"`
}

// Check says what is wrong with f, or nil.
func (f Forward) Check() error {
	if err := names.Validate(f.Name); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		return fmt.Errorf("listen address %q: want host:port", f.Listen)
	}
	return (Expose{Name: f.Name, Addr: "x:1", Class: f.Class}).Check()
}

// Dialer is what forwarding needs of the peer.
type Dialer struct {
	// Open opens a stream to p for the class.
	Open func(ctx context.Context, p peer.ID, proto protocol.ID, class string) (network.Stream, error)
	// Providers finds the peers that expose name.
	Providers func(ctx context.Context, name string) ([]peer.ID, error)
	// Cost is the path cost to p for the class (0 when unmeasured).
	Cost func(p peer.ID, class string) float64
	// Alive, when set, says whether membership holds p alive; the others
	// are tried last.
	Alive func(p peer.ID) bool
	Log   *slog.Logger
}

// providersFresh is how long a provider list is used before it is asked
// for again; a connection that finds no live provider asks at once.
const (
	providersFresh = 5 * time.Second
	openTimeout    = 5 * time.Second
	maxTries       = 4
)

// Forwarder listens on a local port and carries each connection to a
// provider of its service.
type Forwarder struct {
	Forward
	d   Dialer
	ln  net.Listener
	log *slog.Logger
	n   Counters

	mu      sync.Mutex
	provs   []peer.ID
	provsAt time.Time
	failed  map[peer.ID]time.Time
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// Start listens on f.Listen and forwards what it accepts.
func Start(f Forward, d Dialer) (*Forwarder, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", f.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fw := &Forwarder{Forward: f, d: d, ln: ln, log: d.Log.With("layer", "tunnel", "forward", f.Name),
		failed: map[peer.ID]time.Time{}, conns: map[net.Conn]struct{}{}, ctx: ctx, cancel: cancel}
	fw.Listen = ln.Addr().String()
	fw.wg.Add(1)
	go fw.accept()
	return fw, nil
}

// ForwardStatus is a forward and its counts.
type ForwardStatus struct {
	Forward
	BytesOut int64 `json:"bytes_out"` // from local clients to the service
	BytesIn  int64 `json:"bytes_in"`  // from the service to local clients
	Conns    int64 `json:"connections"`
	Active   int64 `json:"active"`
	Failed   int64 `json:"failed"` // connections no provider took
}

// Status reports the forward's counts.
func (fw *Forwarder) Status() ForwardStatus {
	return ForwardStatus{Forward: fw.Forward, BytesOut: fw.n.Out.Load(), BytesIn: fw.n.In.Load(),
		Conns: fw.n.Conns.Load(), Active: fw.n.Active.Load(), Failed: fw.n.Refused.Load()}
}

// Close stops listening and ends the open connections.
func (fw *Forwarder) Close() {
	fw.cancel()
	_ = fw.ln.Close()
	fw.mu.Lock()
	for c := range fw.conns {
		_ = c.Close()
	}
	fw.mu.Unlock()
	fw.wg.Wait()
}

func (fw *Forwarder) accept() {
	defer fw.wg.Done()
	for {
		c, err := fw.ln.Accept()
		if err != nil {
			if fw.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				fw.log.Warn("accept", "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return
		}
		fw.mu.Lock()
		fw.conns[c] = struct{}{}
		fw.mu.Unlock()
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			fw.serve(c.(*net.TCPConn))
			fw.mu.Lock()
			delete(fw.conns, c)
			fw.mu.Unlock()
		}()
	}
}

// serve carries one local connection: to the best provider, or the next
// when one fails before it accepts.
func (fw *Forwarder) serve(c *net.TCPConn) {
	fw.n.Conns.Add(1)
	st, err := fw.open()
	if err != nil {
		fw.n.Refused.Add(1)
		fw.log.Info("no provider took a connection", "err", err)
		_ = c.Close()
		return
	}
	fw.n.Active.Add(1)
	defer fw.n.Active.Add(-1)
	splice(c, st, &fw.n.Out, &fw.n.In)
}

// raceAfter is how long a provider has to accept a tunnel before the
// next one is tried beside it: a provider that died a moment ago may take
// the whole openTimeout to fail, and the connection should not wait.
const raceAfter = 250 * time.Millisecond

// open returns an accepted tunnel stream: providers are tried in order,
// each joined by the next when it fails or has not answered within
// raceAfter, and the first to accept wins.
func (fw *Forwarder) open() (halfCloser, error) {
	var errs []error
	tried := map[peer.ID]bool{}
	for attempt := range 2 {
		// The second round asks for the providers anew, in case the
		// list was old, and tries only those not tried in the first.
		order, err := fw.candidates(attempt > 0)
		if err != nil {
			return nil, err
		}
		st, es := fw.race(order, tried)
		errs = append(errs, es...)
		if st != nil {
			return st, nil
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no peer exposes %q", fw.Name)
	}
	return nil, errors.Join(errs...)
}

// race tries the providers in order, staggered by raceAfter, skipping and
// marking those in tried.
func (fw *Forwarder) race(order []peer.ID, tried map[peer.ID]bool) (halfCloser, []error) {
	type result struct {
		p   peer.ID
		st  halfCloser
		err error
	}
	results := make(chan result, len(order))
	pending := 0
	next := 0
	launch := func() bool {
		for ; next < len(order); next++ {
			p := order[next]
			if tried[p] || len(tried) >= maxTries {
				continue
			}
			tried[p] = true
			pending++
			next++
			go func() {
				st, err := fw.try(p)
				results <- result{p, st, err}
			}()
			return true
		}
		return false
	}
	if !launch() {
		return nil, nil
	}
	timer := time.NewTimer(raceAfter)
	defer timer.Stop()
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				// The others that are still trying are closed as they
				// come.
				go func(n int) {
					for range n {
						if late := <-results; late.st != nil {
							_ = late.st.Close()
						}
					}
				}(pending)
				return r.st, errs
			}
			errs = append(errs, fmt.Errorf("%s: %w", r.p, r.err))
			fw.mu.Lock()
			fw.failed[r.p] = time.Now()
			fw.mu.Unlock()
			if launch() {
				timer.Reset(raceAfter)
			}
		case <-timer.C:
			if launch() {
				timer.Reset(raceAfter)
			}
		}
	}
	return nil, errs
}

// candidates orders the known providers, asking for them anew when the
// list is old, empty, or fresh is set.
func (fw *Forwarder) candidates(fresh bool) ([]peer.ID, error) {
	fw.mu.Lock()
	provs, at := fw.provs, fw.provsAt
	fw.mu.Unlock()
	if fresh || len(provs) == 0 || time.Since(at) > providersFresh {
		ctx, cancel := context.WithTimeout(fw.ctx, openTimeout)
		got, err := fw.d.Providers(ctx, fw.Name)
		cancel()
		if err != nil && len(provs) == 0 {
			return nil, fmt.Errorf("providers of %q: %w", fw.Name, err)
		}
		if err == nil {
			provs = got
			fw.mu.Lock()
			fw.provs, fw.provsAt = got, time.Now()
			fw.mu.Unlock()
		}
	}
	fw.mu.Lock()
	cands := make([]Candidate, len(provs))
	for i, p := range provs {
		cands[i] = Candidate{ID: p, Failed: fw.failed[p]}
	}
	fw.mu.Unlock()
	now := time.Now()
	for i := range cands {
		if fw.d.Alive != nil && !fw.d.Alive(cands[i].ID) {
			cands[i].Failed = now // membership says it is gone: last
		}
	}
	for i := range cands {
		if fw.d.Cost != nil {
			cands[i].Cost = fw.d.Cost(cands[i].ID, fw.Class)
		}
	}
	return slices.Clip(Order(cands, now, rand.Uint64())), nil
}

// try opens a tunnel to p and waits for its answer.
func (fw *Forwarder) try(p peer.ID) (halfCloser, error) {
	ctx, cancel := context.WithTimeout(fw.ctx, openTimeout)
	defer cancel()
	st, err := fw.d.Open(ctx, p, Protocol, fw.Class)
	if err != nil {
		return nil, err
	}
	_ = st.SetDeadline(time.Now().Add(openTimeout))
	if err := WriteRequest(st, fw.Name); err != nil {
		_ = st.Reset()
		return nil, err
	}
	r := bufio.NewReaderSize(st, 600)
	if err := ReadAnswer(r); err != nil {
		_ = st.Reset()
		return nil, err
	}
	_ = st.SetDeadline(time.Time{})
	if r.Buffered() > 0 {
		return bufferedStream{st, r}, nil
	}
	return st, nil
}

package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/peer-overlay/peer/node"
)

// soakKV counts the kv traffic, as the kv goroutine saw it.
type soakKV struct {
	puts, putsToKilled, putsRetried, putsFailed int
	gets, getsToKilled, getsRetried, getsFailed int
	// getsOnRestarting counts gets that succeeded only after retries on
	// a peer that had just been restarted.
	getsOnRestarting int
	minReplicas      int
	underReplicated  int // puts stored on fewer than 2 peers: not counted as keys
	keys             int
	sweepUnchecked   int // keys the final sweep had no time for
	failures         []string
}

// soakKeys is the kv goroutine's list of stored keys.
type soakKeys struct {
	mu   sync.Mutex
	keys []string
}

func (k *soakKeys) add(key string) {
	k.mu.Lock()
	k.keys = append(k.keys, key)
	k.mu.Unlock()
}

func (k *soakKeys) all() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.keys...)
}

func (k *soakKeys) pick(rng *rand.Rand) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 0 {
		return "", false
	}
	return k.keys[rng.IntN(len(k.keys))], true
}

func soakValue(key string) string { return "value of " + key }

// soakOutcome is how one kv call ended.
type soakOutcome int

const (
	soakOK       soakOutcome = iota
	soakToKilled             // the peer asked was killed meanwhile: not the system's failure
	soakFailed
)

// kvLoop puts new keys and gets stored ones through random live peers
// until ctx ends: one put for three gets.
func (s *soak) kvLoop(ctx context.Context, rng *rand.Rand, keys *soakKeys) {
	pace := time.NewTicker(soakKVPace)
	defer pace.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-pace.C:
		}
		key, ok := keys.pick(rng)
		if !ok || rng.IntN(4) == 0 {
			key = fmt.Sprintf("soak-%d", n)
			var replicas int
			out, retried, err := s.call(ctx, rng, -1, func(c *node.Client, cctx context.Context) error {
				r, err := c.Put(cctx, node.PutRequest{Key: key, Value: soakValue(key), TTL: "1h"})
				replicas = r.Replicas
				return err
			})
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			switch out {
			case soakOK:
				s.kv.puts++
				if retried {
					s.kv.putsRetried++
				}
				s.kv.minReplicas = min(s.kv.minReplicas, replicas)
				if replicas >= 2 {
					s.kv.keys++
					keys.add(key)
				} else {
					s.kv.underReplicated++
				}
			case soakToKilled:
				s.kv.putsToKilled++
			case soakFailed:
				s.kv.putsFailed++
				s.failure("put %s: %v", key, err)
			}
			s.mu.Unlock()
			continue
		}
		out, retried, err := s.call(ctx, rng, -1, func(c *node.Client, cctx context.Context) error {
			g, err := c.KVGet(cctx, key)
			if err == nil && g.Value != soakValue(key) {
				return permanentError{fmt.Errorf("value %q, want %q", g.Value, soakValue(key))}
			}
			return err
		})
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		switch out {
		case soakOK:
			s.kv.gets++
			if retried {
				s.kv.getsOnRestarting++
			}
		case soakToKilled:
			s.kv.getsToKilled++
		case soakFailed:
			s.kv.getsFailed++
			s.failure("get %s: %v", key, err)
		}
		s.mu.Unlock()
	}
}

// failure records a kv failure; s.mu is held.
func (s *soak) failure(format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	if s.lastKill != "" {
		msg += " (last kill: " + s.lastKill + ")"
	}
	if len(s.kv.failures) < soakMaxLogged {
		s.kv.failures = append(s.kv.failures, msg)
	}
	s.t.Logf("soak: FAILURE %s", msg)
}

// call runs fn on a live peer (at, or a random one when at < 0). A call
// that fails because its peer was killed meanwhile is soakToKilled; one
// that fails on a peer restarted less than soakRejoinGrace ago is retried
// until the grace ends; any other failure is soakFailed. retried reports
// whether it succeeded only after retries.
func (s *soak) call(ctx context.Context, rng *rand.Rand, at int, fn func(*node.Client, context.Context) error) (out soakOutcome, retried bool, err error) {
	i, gen, cl, restarted, err := s.pickLive(rng, at)
	if err != nil {
		return soakFailed, false, err
	}
	name := s.peers[i].p.Name
	for {
		cctx, cancel := context.WithTimeout(ctx, soakRPCTimeout)
		err = fn(cl, cctx)
		cancel()
		if err == nil {
			return soakOK, retried, nil
		}
		if ctx.Err() != nil {
			return soakToKilled, retried, ctx.Err()
		}
		err = fmt.Errorf("through %s: %w", name, err)
		s.mu.Lock()
		killed := s.peers[i].gen != gen
		s.mu.Unlock()
		var pe permanentError
		switch {
		case killed:
			return soakToKilled, retried, err
		case errors.As(err, &pe):
			return soakFailed, retried, err
		case !restarted.IsZero() && time.Since(restarted) < soakRejoinGrace:
			retried = true
			select {
			case <-ctx.Done():
				return soakToKilled, retried, ctx.Err()
			case <-time.After(pollInterval): // poll interval of the retry, not a fixed wait
			}
		default:
			if retried {
				err = fmt.Errorf("%w (still failing %v after %s's restart)", err, soakRejoinGrace, name)
			}
			return soakFailed, retried, err
		}
	}
}

// pickLive returns a live peer (at, or a random one) with its kill
// generation, client and restart time.
func (s *soak) pickLive(rng *rand.Rand, at int) (int, int, *node.Client, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var live []int
	for i, sp := range s.peers {
		if sp.up && (at < 0 || at == i) {
			live = append(live, i)
		}
	}
	if len(live) == 0 {
		return 0, 0, nil, time.Time{}, errors.New("no live peer")
	}
	i := live[rng.IntN(len(live))]
	sp := s.peers[i]
	return i, sp.gen, sp.client, sp.restarted, nil
}

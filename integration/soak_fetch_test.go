package integration

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// soakRound is one fetch round: one peer shares a new file, the others
// fetch it.
type soakRound struct {
	n       int
	sharer  int
	src     string
	sum     [sha1.Size]byte
	hash    string
	started time.Time
	// issued: leechers whose get was accepted by their current process;
	// done: leechers whose copy was verified byte-identical.
	issued, done map[int]bool
	verifying    map[int]bool // copies being hashed
	took         map[int]time.Duration
	resumed      int // restarted leechers that resumed the fetch themselves
	reissued     int // restarted leechers whose fetch had to be asked again
	// cleanup: peers that were down when the round ended, to clean up
	// after their restart.
	cleanup map[int]bool
}

// fetchErr records a failed or corrupt fetch.
func (s *soak) fetchErr(format string, args ...any) {
	msg := fmt.Sprintf("t=%.1fs ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.fetchErrs = append(s.fetchErrs, msg)
	s.t.Logf("soak: FETCH FAILURE %s", msg)
}

// soakPrepared is a fetch round's file, written and hashed.
type soakPrepared struct {
	n   int
	src string
	sum [sha1.Size]byte
	err error
}

// prepareRound writes the next round's file off the test goroutine, and
// has the round start once it is ready.
func (s *soak) prepareRound() {
	n := len(s.rounds)
	src := filepath.Join(s.srcDir, fmt.Sprintf("round-%d.bin", n))
	seed := s.rng.Uint64()
	s.preparing = true
	go func() {
		pr := soakPrepared{n: n, src: src}
		pr.sum, pr.err = swarm.WriteSample(src, s.cfg.fileSize, seed)
		s.work <- func() { s.startRound(pr) }
	}()
}

// startRound shares a prepared file from a random live peer; pollRound
// then asks every other live peer to fetch it.
func (s *soak) startRound(pr soakPrepared) {
	s.preparing = false
	if pr.err != nil {
		s.t.Fatalf("round %d: write its file: %v", pr.n, pr.err)
	}
	if s.closing {
		_ = os.Remove(pr.src)
		return
	}
	var live []int
	for i := range s.peers {
		if s.client(i) != nil {
			live = append(live, i)
		}
	}
	r := &soakRound{n: pr.n, sharer: live[s.rng.IntN(len(live))], src: pr.src, sum: pr.sum,
		issued: map[int]bool{}, done: map[int]bool{}, verifying: map[int]bool{},
		took: map[int]time.Duration{}, cleanup: map[int]bool{}}
	ctx, cancel := context.WithTimeout(context.Background(), soakRPCTimeout)
	defer cancel()
	sh, err := s.client(r.sharer).Share(ctx, node.ShareRequest{Path: r.src})
	if err != nil {
		s.t.Fatalf("round %d: share through %s: %v", r.n, s.peers[r.sharer].p.Name, err)
	}
	r.hash, r.started = sh.InfoHash, time.Now()
	s.round = r
	s.rounds = append(s.rounds, r)
	s.t.Logf("soak: t=%.1fs round %d: %s shares %d MiB as %s", time.Since(s.start).Seconds(), r.n,
		s.peers[r.sharer].p.Name, s.cfg.fileSize>>20, r.hash[:12])
	s.pollRound()
}

// outDir is where peer i puts round r's copy.
func (s *soak) outDir(r *soakRound, i int) string {
	return filepath.Join(s.peers[i].p.Home, fmt.Sprintf("soak-round-%d", r.n))
}

// pollRound asks for the gets not yet accepted, checks progress and has
// the copies that completed verified off the test goroutine.
func (s *soak) pollRound() {
	r := s.round
	if r == nil {
		return
	}
	if time.Since(r.started) > s.cfg.roundTimeout && !s.closing {
		// Given up on during the churn: reported, and the soak goes on
		// with a new round; the goroutine dumps are kept for the end.
		s.stuckRound(false)
		if time.Until(s.start.Add(s.cfg.duration)) >= s.cfg.lastRound {
			s.prepareRound()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*rpcTimeout)
	defer cancel()
	for i, sp := range s.peers {
		cl := s.client(i)
		if i == r.sharer || r.done[i] || r.verifying[i] || cl == nil {
			continue
		}
		if !r.issued[i] {
			if _, err := cl.StartGet(ctx, node.GetRequest{Ref: r.hash, Out: s.outDir(r, i)}); err != nil {
				s.fetchErr("round %d: get through %s: %v", r.n, sp.p.Name, err)
				continue
			}
			r.issued[i] = true
			continue
		}
		st, err := cl.SwarmStatus(ctx, r.hash)
		if err != nil {
			continue // a restart in between; rejoinRound sorts it out
		}
		if st.Error != "" {
			s.fetchErr("round %d: %s: swarm error: %s", r.n, sp.p.Name, st.Error)
			r.done[i] = true // failed for good; counted in fetchErrs
			s.maybeEndRound(r)
			if s.round != r {
				return
			}
			continue
		}
		if !st.Complete {
			continue
		}
		r.verifying[i] = true
		took := time.Since(r.started)
		go func() {
			sum, err := swarm.FileSHA1(st.Path)
			s.work <- func() { s.verified(r, i, st.Path, sum, err, took) }
		}()
	}
}

// verified takes the hash of peer i's copy of round r, and ends the round
// once every copy is in.
func (s *soak) verified(r *soakRound, i int, path string, sum [sha1.Size]byte, err error, took time.Duration) {
	if r != s.round {
		return // the round was given up as stuck meanwhile
	}
	name := s.peers[i].p.Name
	switch {
	case err != nil:
		s.fetchErr("round %d: %s: read its copy: %v", r.n, name, err)
	case sum != r.sum:
		s.fetchErr("round %d: %s: %s is not byte-identical to the original (sha1 %x, want %x)",
			r.n, name, path, sum[:8], r.sum[:8])
	default:
		r.took[i] = took
	}
	delete(r.verifying, i)
	r.done[i] = true
	s.maybeEndRound(r)
}

// maybeEndRound ends round r once every leecher's copy is verified or has
// failed for good, and prepares the next while there is time for one.
func (s *soak) maybeEndRound(r *soakRound) {
	if r != s.round || len(r.done) < len(s.peers)-1 {
		return
	}
	var slowest time.Duration
	for _, d := range r.took {
		slowest = max(slowest, d)
	}
	s.t.Logf("soak: t=%.1fs round %d: %d/%d copies verified, the last complete after %.1f s; %d restarted leechers resumed, %d asked again",
		time.Since(s.start).Seconds(), r.n, len(r.took), len(s.peers)-1, slowest.Seconds(), r.resumed, r.reissued)
	s.endRound(r)
	s.round = nil
	if !s.closing && time.Until(s.start.Add(s.cfg.duration)) >= s.cfg.lastRound {
		s.prepareRound()
	}
}

// endRound removes round r's swarm and copies from every peer, so that
// later figures are not inflated by swarms kept for nothing.
func (s *soak) endRound(r *soakRound) {
	for i := range s.peers {
		cl := s.client(i)
		if cl == nil {
			r.cleanup[i] = true
			continue
		}
		s.removeRound(r, i, cl)
	}
	_ = os.Remove(r.src)
}

func (s *soak) removeRound(r *soakRound, i int, cl *node.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := cl.RemoveSwarm(ctx, r.hash); err != nil && !errors.Is(err, node.ErrNotFoundAPI) {
		s.t.Logf("soak: round %d: remove the swarm from %s: %v", r.n, s.peers[i].p.Name, err)
	}
	if i != r.sharer {
		_ = os.RemoveAll(s.outDir(r, i))
	}
}

// cleanupAfterRestart removes the ended rounds a peer was down for.
func (s *soak) cleanupAfterRestart(i int, cl *node.Client) bool {
	did := false
	for _, r := range s.rounds {
		if r.cleanup[i] {
			s.removeRound(r, i, cl)
			delete(r.cleanup, i)
			did = true
		}
	}
	return did
}

// stuckRound reports a round that did not finish in time, with each
// unfinished peer's progress and, when dump is set (the churn is over),
// has those peers dump their goroutines to their logs (SIGQUIT) so the
// cause can be read there.
func (s *soak) stuckRound(dump bool) {
	r := s.round
	var lines []string
	for i, sp := range s.peers {
		if i == r.sharer || r.done[i] {
			continue
		}
		cl := s.client(i)
		line := sp.p.Name + ": down"
		if cl != nil {
			ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
			st, err := cl.SwarmStatus(ctx, r.hash)
			cancel()
			line = fmt.Sprintf("%s: %v", sp.p.Name, err)
			if err == nil {
				line = sp.p.Name + ": " + describeStatus(st)
			}
		}
		lines = append(lines, line)
	}
	for i, sp := range s.peers {
		if !dump || i == r.sharer || r.done[i] || !sp.p.running() {
			continue
		}
		sp.p.stopped = true
		_ = sp.p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-sp.p.done:
		case <-time.After(killTimeout):
		}
	}
	dumped := ""
	if dump {
		dumped = "; goroutine dumps (SIGQUIT) in the logs of the unfinished peers"
	}
	s.fetchErr("round %d stuck: %d of %d copies verified %v after the share%s:\n%s",
		r.n, len(r.done), len(s.peers)-1, s.cfg.roundTimeout, dumped, strings.Join(lines, "\n"))
	for i := range s.peers {
		if i != r.sharer && !r.done[i] {
			r.done[i] = true
		}
	}
	s.round = nil
}

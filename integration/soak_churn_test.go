package integration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/peer-overlay/peer/node"
)

// kill marks peer i down and kills it with SIGKILL.
func (s *soak) kill(i int, down time.Duration) {
	sp := s.peers[i]
	s.mu.Lock()
	sp.up = false
	sp.gen++
	sp.client = nil
	s.mu.Unlock()
	pid := sp.p.cmd.Process.Pid
	if inc := s.incs[i]; inc != nil {
		inc.endedByKill = true
	}
	sp.p.Kill9()
	s.kills++
	s.mu.Lock()
	s.lastKill = fmt.Sprintf("%s at t=%.1fs", sp.p.Name, time.Since(s.start).Seconds())
	s.mu.Unlock()
	s.t.Logf("soak: t=%.1fs kill -9 %s (pid %d), down for %.1f s", time.Since(s.start).Seconds(), sp.p.Name, pid, down.Seconds())
}

// restart starts peer i again from its home and puts its fetch back in
// hand: resumed by the daemon, or asked again.
func (s *soak) restart(i int) {
	sp := s.peers[i]
	began := time.Now()
	sp.p.Restart()
	cl, err := node.NewClient(sp.p.Home)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	sp.up, sp.client, sp.restarted = true, cl, time.Now()
	s.mu.Unlock()
	sp.rejoining = true
	s.newIncarnation(i)
	note := ""
	if r := s.round; r != nil {
		note = s.rejoinRound(r, i, cl)
	}
	if s.cleanupAfterRestart(i, cl) {
		note += "; cleaned up an ended round"
	}
	s.t.Logf("soak: t=%.1fs restarted %s (pid %d) in %.1f s%s", time.Since(s.start).Seconds(), sp.p.Name,
		sp.p.cmd.Process.Pid, time.Since(began).Seconds(), note)
}

// pollRejoins checks that every restarted peer is back in the ring (its
// successor list full) within soakRejoinGrace, and records how long it
// took.
func (s *soak) pollRejoins() {
	for i, sp := range s.peers {
		cl := s.client(i)
		if !sp.rejoining || cl == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		r, err := cl.Ring(ctx)
		cancel()
		since := time.Since(sp.restarted)
		if err == nil && r.Joined && len(r.Successors) == min(8, len(s.peers)-1) {
			sp.rejoining = false
			s.rejoins = append(s.rejoins, since)
			continue
		}
		if since > soakRejoinGrace {
			sp.rejoining = false
			msg := fmt.Sprintf("t=%.1fs %s not back in the ring %v after its restart: joined=%v, %d successors (%v)",
				time.Since(s.start).Seconds(), sp.p.Name, soakRejoinGrace, r.Joined, len(r.Successors), err)
			s.noRejoin = append(s.noRejoin, msg)
			s.t.Logf("soak: FAILURE %s", msg)
		}
	}
}

// rejoinRound checks what a restarted peer does with the round in flight.
func (s *soak) rejoinRound(r *soakRound, i int, cl *node.Client) string {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := cl.SwarmStatus(ctx, r.hash)
	switch {
	case i == r.sharer && err == nil:
		return "; resumed seeding"
	case i == r.sharer:
		// A shared swarm is saved complete and must come back by itself.
		s.reshared++
		s.fetchErr("round %d: sharer %s did not resume seeding after its restart: %v", r.n, s.peers[i].p.Name, err)
		if _, err := cl.Share(ctx, node.ShareRequest{Path: r.src}); err != nil {
			s.t.Fatalf("round %d: share again through %s: %v", r.n, s.peers[i].p.Name, err)
		}
		return "; shared again"
	case r.done[i]:
		return ""
	case err == nil:
		r.resumed++
		r.issued[i] = true
		return fmt.Sprintf("; resumed the fetch at %d/%d pieces", st.Have, st.Pieces)
	case errors.Is(err, node.ErrNotFoundAPI) && !r.issued[i]:
		return "; fetch not asked yet" // the round started while it was down
	case errors.Is(err, node.ErrNotFoundAPI):
		// The daemon saves a swarm before it accepts the get, so a
		// restart must bring it back.
		r.reissued++
		r.issued[i] = false // pollRound asks again
		s.fetchErr("round %d: %s did not resume the fetch it had accepted before it was killed", r.n, s.peers[i].p.Name)
		return "; fetch not resumed, asking again"
	}
	return fmt.Sprintf("; swarm status: %v", err)
}

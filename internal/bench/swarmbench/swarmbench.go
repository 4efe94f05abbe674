// Package swarmbench is `peer bench swarm`: one seeder and N leechers in
// one process, each a real libp2p host on 127.0.0.1 with upload caps, timed
// against the lower bound; and the two-peer comparison with a bare stream.
package swarmbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/internal/stop"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
	"github.com/peer-overlay/peer/swarm/wire"
)

// BenchConfig describes `peer bench swarm`: one seeder and Peers leechers
// in this process, each a real libp2p host on 127.0.0.1.
type BenchConfig struct {
	Peers     int
	Size      int64
	Piece     int64
	SeedUp    float64 // bytes/s
	PeerUp    float64 // bytes/s
	Transport string  // tcp (default) or quic
	Dir       string  // scratch space (default: a new temporary directory)
	Seed      uint64
	// SeedEgress bounds the seeder's upload, in copies of the file
	// (swarm.ShareOptions.EgressCopies; 0 = no bound).
	SeedEgress float64
	Progress   func(done, total int) // leechers finished so far
	Warn       func(msg string)      // problems worth a line on stderr (nil: none)
}

func (c BenchConfig) warn(msg string) {
	if c.Warn != nil {
		c.Warn(msg)
	}
}

// BenchResult is what `peer bench swarm` prints.
type BenchResult struct {
	Peers          int       `json:"peers"`
	SizeBytes      int64     `json:"size_bytes"`
	PieceBytes     int64     `json:"piece_bytes"`
	SeedUp         float64   `json:"seed_up_bytes_per_s"`
	PeerUp         float64   `json:"peer_up_bytes_per_s"`
	Transport      string    `json:"transport"`
	Seconds        float64   `json:"seconds"`
	LowerBound     float64   `json:"lower_bound_seconds"`
	Ratio          float64   `json:"ratio"`
	PerPeerSeconds []float64 `json:"per_peer_seconds"`
	MaxStall       float64   `json:"max_stall_seconds"`
	SeedUploaded   int64     `json:"seed_uploaded_bytes"`
	Redundant      int64     `json:"redundant_bytes"` // received by leechers but not needed: endgame copies, blocks that crossed a cancel
	Verified       bool      `json:"verified"`
	// TeardownSkipped names what the teardown left running at its
	// deadline (empty on a clean stop).
	TeardownSkipped []string `json:"teardown_skipped,omitempty"`
}

// TeardownTimeout bounds a bench's teardown, whatever a library does.
const TeardownTimeout = 10 * time.Second

// LowerBound is the least time in which a seeder with upload us can give a
// file of f bytes to n peers with uploads ui each and downloads dmin at
// least (0 for uncapped), as in Kurose and Ross:
// max{F/us, F/dmin, N·F/(us + Σui)}.
func LowerBound(n int, f int64, us, ui, dmin float64) float64 {
	F := float64(f)
	lb := F / us
	if dmin > 0 {
		lb = max(lb, F/dmin)
	}
	return max(lb, float64(n)*F/(us+float64(n)*ui))
}

// Bench runs one distribution and measures it.
func Bench(cfg BenchConfig) (res BenchResult, err error) {
	if cfg.Peers < 1 || cfg.Size < 1 || cfg.SeedUp <= 0 || cfg.PeerUp < 0 {
		return BenchResult{}, fmt.Errorf("bench swarm needs --peers ≥ 1, a size and a seed upload rate")
	}
	if cfg.Piece == 0 {
		cfg.Piece = meta.AutoPieceLength(cfg.Size)
	}
	if cfg.Transport == "" {
		cfg.Transport = "tcp"
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "peer-bench-swarm-")
		if err != nil {
			return BenchResult{}, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	src := filepath.Join(dir, "seed", "sample.bin")
	sum, err := swarm.WriteSample(src, cfg.Size, cfg.Seed)
	if err != nil {
		return BenchResult{}, err
	}
	info, err := meta.Build(src, cfg.Piece, nil)
	if err != nil {
		return BenchResult{}, err
	}
	hosts, err := p2phost.Loopback(cfg.Peers+1, cfg.Transport)
	if err != nil {
		return BenchResult{}, err
	}
	var teardown stop.Stack
	defer func() {
		if err := teardown.Close(TeardownTimeout); err != nil {
			res.TeardownSkipped = teardown.Skipped()
			cfg.warn(fmt.Sprintf("bench teardown: %v", err))
		}
	}()
	teardown.Push("libp2p hosts", func() error { return p2phost.CloseAll(hosts, TeardownTimeout) })
	// A peer serves the swarm protocol from its start, before it joins.
	mgrs := make([]*swarm.Manager, len(hosts))
	for i, h := range hosts {
		up := cfg.PeerUp
		if i == 0 {
			up = cfg.SeedUp
		}
		mgrs[i] = swarm.NewManager(h, nil, swarm.Config{UploadRate: up})
	}
	teardown.Push("swarm managers", func() error {
		// All at once: one after another, 65 of them on a busy machine
		// took most of the teardown's budget.
		var wg sync.WaitGroup
		for _, m := range mgrs {
			wg.Go(func() { m.Close() })
		}
		wg.Wait()
		return nil
	})
	// Peers of a cluster are connected already (the group keeps a
	// connection to every member), so the clock starts after the
	// transport handshakes and after each host has learnt, through
	// identify, which protocols the others speak.
	if err := p2phost.ConnectAll(hosts); err != nil {
		return BenchResult{}, err
	}
	if err := p2phost.WaitIdentified(hosts, wire.Protocol); err != nil {
		return BenchResult{}, err
	}
	if _, err := mgrs[0].Seed(info, src, swarm.ShareOptions{EgressCopies: cfg.SeedEgress}); err != nil {
		return BenchResult{}, err
	}
	ids := make([]peer.ID, len(hosts))
	for i, h := range hosts {
		ids[i] = h.ID()
	}
	start := time.Now()
	leechers := make([]*swarm.Swarm, cfg.Peers)
	for i := range leechers {
		s, err := mgrs[i+1].Get(info.Hash(), filepath.Join(dir, fmt.Sprint("peer-", i+1)), swarm.GetOptions{Info: info})
		if err != nil {
			return BenchResult{}, err
		}
		leechers[i] = s
	}
	for _, s := range leechers {
		s.AddPeers(ids...)
	}
	res = BenchResult{
		Peers: cfg.Peers, SizeBytes: cfg.Size, PieceBytes: cfg.Piece, SeedUp: cfg.SeedUp, PeerUp: cfg.PeerUp,
		Transport: cfg.Transport, PerPeerSeconds: make([]float64, cfg.Peers),
		LowerBound: LowerBound(cfg.Peers, cfg.Size, cfg.SeedUp, cfg.PeerUp, 0),
	}
	// Watch every leecher: when it finishes, and the longest time it went
	// without a byte while unfinished.
	deadline := time.Now().Add(time.Duration(10*res.LowerBound+60) * time.Second)
	last := make([]int64, cfg.Peers)
	lastAt := make([]time.Time, cfg.Peers)
	for i := range lastAt {
		lastAt[i] = start
	}
	finished := 0
	for finished < cfg.Peers {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d leechers finished within %.0f s", finished, cfg.Peers, time.Until(deadline).Seconds()+time.Since(start).Seconds())
		}
		time.Sleep(50 * time.Millisecond)
		now := time.Now()
		finished = 0
		for i, s := range leechers {
			if res.PerPeerSeconds[i] > 0 {
				finished++
				continue
			}
			select {
			case <-s.Done():
				if err := s.Err(); err != nil {
					return res, fmt.Errorf("leecher %d: %w", i+1, err)
				}
				res.PerPeerSeconds[i] = s.Status().Seconds
				finished++
				continue
			default:
			}
			st := s.Status()
			if st.Downloaded != last[i] {
				last[i], lastAt[i] = st.Downloaded, now
			} else {
				res.MaxStall = max(res.MaxStall, now.Sub(lastAt[i]).Seconds())
			}
		}
		if cfg.Progress != nil {
			cfg.Progress(finished, cfg.Peers)
		}

	}
	for _, t := range res.PerPeerSeconds {
		res.Seconds = max(res.Seconds, t)
	}
	res.Ratio = res.Seconds / res.LowerBound
	res.SeedUploaded = mgrs[0].Swarm(info.Hash()).Status().Uploaded
	for _, s := range leechers {
		res.Redundant += s.Status().Redundant
	}
	res.Verified = true
	for i, s := range leechers {
		got, err := swarm.FileSHA1(s.Path())
		if err != nil || got != sum {
			res.Verified = false
			return res, fmt.Errorf("leecher %d's copy differs from the original (%v)", i+1, err)
		}
	}
	return res, nil
}

// PairResult is what `peer bench swarm --pair` prints. Each round moves
// the file once over a bare stream and once through the swarm, one after
// the other, so that both see the same machine; the figures are medians
// over the rounds.
type PairResult struct {
	SizeBytes  int64     `json:"size_bytes"`
	Transport  string    `json:"transport"`
	Rounds     int       `json:"rounds"`
	SwarmSec   float64   `json:"swarm_seconds"`
	StreamSec  float64   `json:"stream_seconds"`
	SwarmRate  float64   `json:"swarm_bytes_per_s"`
	StreamRate float64   `json:"stream_bytes_per_s"`
	Ratio      float64   `json:"ratio"`
	Ratios     []float64 `json:"round_ratios"`
	// CPU time this process spent per byte moved, both ends together: on
	// a machine where the two peers share few cores, the ratio cannot
	// beat StreamCPU/SwarmCPU, since verifying and storing pieces costs
	// CPU that a bare stream does not spend.
	SwarmCPU        float64  `json:"swarm_cpu_seconds"`
	StreamCPU       float64  `json:"stream_cpu_seconds"`
	TeardownSkipped []string `json:"teardown_skipped,omitempty"`
}

// BenchPair moves size bytes uncapped from one peer to another through the
// swarm, and the same number of bytes over a bare libp2p stream on the same
// transport, rounds times each, and compares the two rates.
func BenchPair(size, piece int64, transport string, rounds int) (res PairResult, err error) {
	rounds = max(rounds, 1)
	res = PairResult{SizeBytes: size, Transport: transport, Rounds: rounds}
	dir, err := os.MkdirTemp("", "peer-bench-pair-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	hosts, err := p2phost.Loopback(2, transport)
	if err != nil {
		return res, err
	}
	defer func() {
		if err := p2phost.CloseAll(hosts, TeardownTimeout); err != nil {
			res.TeardownSkipped = []string{err.Error()}
		}
	}()
	// The bare stream: write size bytes, the other side reads them all and
	// answers one byte.
	const proto = "/peer/bench/raw/1.0.0"
	hosts[1].SetStreamHandler(proto, func(st network.Stream) {
		defer st.Close()
		if _, err := io.Copy(io.Discard, st); err == nil {
			st.Write([]byte{1})
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rounds)*5*time.Minute)
	defer cancel()
	if err := hosts[0].Connect(ctx, peer.AddrInfo{ID: hosts[1].ID(), Addrs: hosts[1].Addrs()}); err != nil {
		return res, err
	}
	src := filepath.Join(dir, "seed", "sample.bin")
	if _, err := swarm.WriteSample(src, size, 1); err != nil {
		return res, err
	}
	info, err := meta.Build(src, piece, nil)
	if err != nil {
		return res, err
	}
	a, b := swarm.NewManager(hosts[0], nil, swarm.Config{}), swarm.NewManager(hosts[1], nil, swarm.Config{})
	defer a.Close()
	defer b.Close()
	if _, err := a.Seed(info, src, swarm.ShareOptions{NoSuperSeed: true}); err != nil {
		return res, err
	}
	buf := make([]byte, 256<<10)
	var swarmSec, streamSec, swarmCPU, streamCPU []float64
	for round := range rounds {
		cpu0, t0 := stats.CPUTime(), time.Now()
		st, err := hosts[0].NewStream(ctx, hosts[1].ID(), proto)
		if err != nil {
			return res, err
		}
		for left := size; left > 0; {
			n := min(left, int64(len(buf)))
			if _, err := st.Write(buf[:n]); err != nil {
				return res, err
			}
			left -= n
		}
		st.CloseWrite()
		if _, err := io.ReadFull(st, buf[:1]); err != nil {
			return res, fmt.Errorf("bare stream: %w", err)
		}
		st.Close()
		streamSec = append(streamSec, time.Since(t0).Seconds())
		streamCPU = append(streamCPU, (stats.CPUTime() - cpu0).Seconds())

		out := filepath.Join(dir, fmt.Sprintf("leech%d", round))
		cpu0, t0 = stats.CPUTime(), time.Now()
		s, err := b.Get(info.Hash(), out, swarm.GetOptions{Info: info})
		if err != nil {
			return res, err
		}
		s.AddPeers(hosts[0].ID())
		select {
		case <-s.Done():
		case <-ctx.Done():
			return res, fmt.Errorf("the swarm transfer did not finish in time")
		}
		if err := s.Err(); err != nil {
			return res, err
		}
		swarmSec = append(swarmSec, time.Since(t0).Seconds())
		swarmCPU = append(swarmCPU, (stats.CPUTime() - cpu0).Seconds())
		res.Ratios = append(res.Ratios, streamSec[round]/swarmSec[round])
		// The next round starts from nothing again.
		if err := b.Remove(info.Hash()); err != nil {
			return res, err
		}
		if err := os.RemoveAll(out); err != nil {
			return res, err
		}
	}
	res.SwarmSec, res.StreamSec = stats.Median(swarmSec), stats.Median(streamSec)
	res.SwarmCPU, res.StreamCPU = stats.Median(swarmCPU), stats.Median(streamCPU)
	res.SwarmRate = float64(size) / res.SwarmSec
	res.StreamRate = float64(size) / res.StreamSec
	res.Ratio = stats.Median(res.Ratios)
	return res, nil
}

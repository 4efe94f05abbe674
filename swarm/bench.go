package swarm

import (
	"context"
	"crypto/sha1"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/internal/stop"
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
	Progress  func(done, total int) // leechers finished so far
	Warn      func(msg string)      // problems worth a line on stderr (nil: none)
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
		cfg.Piece = meta.DefaultPieceLength
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
	sum, err := WriteSample(src, cfg.Size, cfg.Seed)
	if err != nil {
		return BenchResult{}, err
	}
	info, err := meta.Build(src, cfg.Piece, nil)
	if err != nil {
		return BenchResult{}, err
	}
	hosts, err := benchHosts(cfg.Peers+1, cfg.Transport)
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
	mgrs := make([]*Manager, len(hosts))
	for i, h := range hosts {
		up := cfg.PeerUp
		if i == 0 {
			up = cfg.SeedUp
		}
		mgrs[i] = NewManager(h, nil, Config{UploadRate: up})
	}
	teardown.Push("swarm managers", func() error {
		for _, m := range mgrs {
			m.Close()
		}
		return nil
	})
	// Peers of a cluster are connected already (the group keeps a
	// connection to every member), so the clock starts after the
	// transport handshakes and after each host has learnt, through
	// identify, which protocols the others speak.
	if err := connectAll(hosts); err != nil {
		return BenchResult{}, err
	}
	if err := waitIdentified(hosts); err != nil {
		return BenchResult{}, err
	}
	if _, err := mgrs[0].Seed(info, src, ShareOptions{}); err != nil {
		return BenchResult{}, err
	}
	ids := make([]peer.ID, len(hosts))
	for i, h := range hosts {
		ids[i] = h.ID()
	}
	start := time.Now()
	leechers := make([]*Swarm, cfg.Peers)
	for i := range leechers {
		s, err := mgrs[i+1].Get(info.Hash(), filepath.Join(dir, fmt.Sprint("peer-", i+1)), GetOptions{Info: info})
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
		got, err := FileSHA1(s.Path())
		if err != nil || got != sum {
			res.Verified = false
			return res, fmt.Errorf("leecher %d's copy differs from the original (%v)", i+1, err)
		}
	}
	return res, nil
}

// WriteSample writes size pseudo-random bytes (seeded) to path and returns
// their SHA-1.
func WriteSample(path string, size int64, seed uint64) ([20]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return [20]byte{}, err
	}
	f, err := os.Create(path)
	if err != nil {
		return [20]byte{}, err
	}
	defer f.Close()
	h := sha1.New()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 'p', 'e', 'e', 'r'}))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		for i := range buf[:n] {
			buf[i] = byte(r.Uint32())
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return [20]byte{}, err
		}
		h.Write(buf[:n])
		left -= n
	}
	var sum [20]byte
	copy(sum[:], h.Sum(nil))
	return sum, f.Close()
}

// FileSHA1 hashes the whole file at path.
func FileSHA1(path string) ([20]byte, error) {
	var sum [20]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// benchHosts starts n libp2p hosts on 127.0.0.1 that know each other's
// addresses.
func benchHosts(n int, transport string) ([]host.Host, error) {
	var opts []libp2p.Option
	switch transport {
	case "tcp":
		opts = append(opts, libp2p.Transport(tcp.NewTCPTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Security(noise.ID, noise.New))
	case "quic":
		opts = append(opts, libp2p.Transport(quic.NewTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	default:
		return nil, fmt.Errorf("transport %q: want tcp or quic", transport)
	}
	opts = append(opts, libp2p.ResourceManager(&network.NullResourceManager{}))
	opts = append(opts, p2phost.Options()...)
	hosts := make([]host.Host, 0, n)
	for range n {
		h, err := libp2p.New(opts...)
		if err != nil {
			for _, x := range hosts {
				x.Close()
			}
			return nil, err
		}
		hosts = append(hosts, h)
	}
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
			}
		}
	}
	return hosts, nil
}

// waitIdentified waits until every host knows that every other speaks the
// swarm protocol.
func waitIdentified(hosts []host.Host) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range hosts {
		for _, b := range hosts {
			for a != b {
				if ps, _ := a.Peerstore().SupportsProtocols(b.ID(), wire.Protocol); len(ps) > 0 {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("host %s has not learnt in 30 s that %s speaks %s", a.ID(), b.ID(), wire.Protocol)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	return nil
}

// connectAll connects every pair of hosts, a few at a time.
func connectAll(hosts []host.Host) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type pair struct{ a, b host.Host }
	work := make(chan pair)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := p.a.Connect(ctx, peer.AddrInfo{ID: p.b.ID(), Addrs: p.b.Addrs()}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			work <- pair{a, b}
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("connect the bench's hosts: %w", err)
	default:
		return nil
	}
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
	hosts, err := benchHosts(2, transport)
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
	if _, err := WriteSample(src, size, 1); err != nil {
		return res, err
	}
	info, err := meta.Build(src, piece, nil)
	if err != nil {
		return res, err
	}
	a, b := NewManager(hosts[0], nil, Config{}), NewManager(hosts[1], nil, Config{})
	defer a.Close()
	defer b.Close()
	if _, err := a.Seed(info, src, ShareOptions{NoSuperSeed: true}); err != nil {
		return res, err
	}
	buf := make([]byte, 256<<10)
	var swarmSec, streamSec, swarmCPU, streamCPU []float64
	for round := range rounds {
		cpu0, t0 := cpuTime(), time.Now()
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
		streamCPU = append(streamCPU, (cpuTime() - cpu0).Seconds())

		out := filepath.Join(dir, fmt.Sprintf("leech%d", round))
		cpu0, t0 = cpuTime(), time.Now()
		s, err := b.Get(info.Hash(), out, GetOptions{Info: info})
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
		swarmCPU = append(swarmCPU, (cpuTime() - cpu0).Seconds())
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

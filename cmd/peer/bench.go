package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/dht/dhttest"
	"github.com/peer-overlay/peer/internal/bench/swarmbench"
	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
)

func newBenchCmd(g *globals) *cobra.Command {
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Measure the overlay: bench dht, bench swarm, bench ron",
	}
	var sim bool
	var nodes, lookups int
	var seed uint64
	dhtCmd := &cobra.Command{
		Use:   "dht",
		Short: "Lookup hops in a simulated ring (--sim), or lookup and get latency against a running peer",
		Long: `With --sim: grow a Chord ring of --nodes cores in one process (simulated
network, seeded), run --lookups lookups from random members to random keys,
and report mean and p99 hops beside ½·log2 N, and the fraction answered
with the true successor.

Without --sim: run --lookups lookups through the peer running in --home
(checking each owner against the ring computed from the member list), then
store and fetch a tenth as many records, and report latency percentiles.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lookups < 1 {
				return usageError{fmt.Errorf("--lookups %d: want at least 1", lookups)}
			}
			if sim {
				if nodes < 1 || nodes > 100_000 {
					return usageError{fmt.Errorf("--nodes %d: want 1 to 100000", nodes)}
				}
				progress := func(s string) {
					if !g.json {
						fmt.Fprintln(os.Stderr, s)
					}
				}
				start := time.Now()
				res, err := dhttest.Bench(nodes, lookups, seed, progress)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(struct {
						dhttest.BenchResult
						WallSeconds float64 `json:"wall_seconds"`
					}{res, time.Since(start).Seconds()})
				}
				fmt.Printf("nodes %d, lookups %d: mean hops %.2f (½·log2 N = %.2f), p99 %d, success %.4f\n",
					res.Nodes, res.Lookups, res.MeanHops, res.HalfLog2N, res.P99Hops, res.LookupSuccess)
				return nil
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := benchLive(cmd.Context(), c, lookups, g.json)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(res)
			}
			fmt.Printf("lookups %d: correct %.4f, latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, mean hops %.2f\n",
				res.Lookups, res.LookupSuccess, res.LookupMs.P50, res.LookupMs.P90, res.LookupMs.P99, res.MeanHops)
			fmt.Printf("kv: %d puts, %d gets found %d, get latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n",
				res.Puts, res.Gets, res.GetsFound, res.GetMs.P50, res.GetMs.P90, res.GetMs.P99)
			return nil
		},
	}
	dhtCmd.Flags().BoolVar(&sim, "sim", false, "simulate the ring in-process instead of using a running peer")
	dhtCmd.Flags().IntVar(&nodes, "nodes", 1024, "ring size for --sim")
	dhtCmd.Flags().IntVar(&lookups, "lookups", 1000, "number of lookups")
	dhtCmd.Flags().Uint64Var(&seed, "seed", 1, "random seed for --sim")
	bench.AddCommand(dhtCmd, newBenchSwarmCmd(g), newBenchRONCmd(g), newBenchTunnelCmd(g), newSpinCmd())
	return bench
}

func newBenchSwarmCmd(g *globals) *cobra.Command {
	var peers int
	var transport string
	size, piece := units.Size(16<<20), units.Size(0)
	seedUp, peerUp := units.Rate(4<<20), units.Rate(1<<20)
	var seed uint64
	var pair bool
	var rounds, contend int
	var seedEgress float64
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Distribute a file from one seeder to N peers in this process and compare with the lower bound",
		Long: `One seeder and --peers leechers, each a real libp2p host on 127.0.0.1 in
this process, with the upload caps given (downloads uncapped). Prints the
time until the last leecher has verified the whole file, the lower bound
max{F/us, F/dmin, N·F/(us + Σui)} (Kurose & Ross), and their ratio.

With --pair: an uncapped transfer between two peers beside a bare libp2p
stream on the same transport, and their ratio: the median of --rounds
rounds, each one of both. The CPU time each took is printed beside: where
the two peers share few cores, hashing and storing pieces costs CPU that
a bare stream does not, and that bounds the ratio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sz, pc := int64(size), int64(piece)
			if transport != "tcp" && transport != "quic" {
				return usageError{fmt.Errorf("--transport %q: want tcp or quic", transport)}
			}
			if pair {
				if rounds < 1 || rounds > 100 {
					return usageError{fmt.Errorf("--rounds %d: want 1 to 100", rounds)}
				}
				res, err := swarmbench.BenchPair(sz, pc, transport, rounds)
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(res)
				}
				fmt.Printf("%s over %s, median of %d rounds: swarm %.1f MiB/s, bare stream %.1f MiB/s, ratio %.2f\n",
					units.FormatBytes(float64(res.SizeBytes)), res.Transport, res.Rounds, res.SwarmRate/(1<<20), res.StreamRate/(1<<20), res.Ratio)
				fmt.Printf("CPU time per transfer, both ends: swarm %.2f s, bare stream %.2f s\n", res.SwarmCPU, res.StreamCPU)
				return nil
			}
			su, pu := float64(seedUp), float64(peerUp)
			if su <= 0 {
				return usageError{fmt.Errorf("--seed-up %q: want a rate above 0 such as 4MiB/s", seedUp.String())}
			}
			if peers < 1 || peers > 256 {
				return usageError{fmt.Errorf("--peers %d: want 1 to 256", peers)}
			}
			if err := validContend(contend); err != nil {
				return err
			}
			if seedEgress != 0 && (seedEgress < 1 || seedEgress > 1000) {
				return usageError{fmt.Errorf("--seed-egress %g: want 0 (no bound) or 1 to 1000 copies of the file", seedEgress)}
			}
			lb := swarmbench.LowerBound(peers, sz, su, pu, 0)
			if !g.json {
				fmt.Fprintf(os.Stderr, "distributing %s to %d peers (seed up %s/s, peers up %s/s); lower bound %.1f s\n",
					units.FormatBytes(float64(sz)), peers, units.FormatBytes(su), units.FormatBytes(pu), lb)
			}
			var bar *progress
			if !g.json {
				bar = newProgress("peers done", peers)
			}
			busy, err := startContention(contend)
			if err != nil {
				return err
			}
			if path := os.Getenv("PEER_CPUPROFILE"); path != "" {
				stop, err := startCPUProfile(path)
				if err != nil {
					busy.stop()
					return err
				}
				defer stop()
			}
			res, err := swarmbench.Bench(swarmbench.BenchConfig{
				Peers: peers, Size: sz, Piece: pc, SeedUp: su, PeerUp: pu, Transport: transport, Seed: seed, SeedEgress: seedEgress,
				Progress: func(done, total int) {
					if bar != nil {
						bar.set(done)
					}
				},
				Warn: func(msg string) { fmt.Fprintln(os.Stderr, "peer bench swarm:", msg) },
			})
			busy.stop()
			if bar != nil {
				bar.done()
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(struct {
					swarmbench.BenchResult
					Contend int `json:"contend"`
				}{res, contend})
			}
			fmt.Printf("%d peers got %s in %.2f s; lower bound %.2f s; ratio %.3f; longest stall %.1f s; redundant %s\n",
				res.Peers, units.FormatBytes(float64(res.SizeBytes)), res.Seconds, res.LowerBound, res.Ratio, res.MaxStall,
				units.FormatBytes(float64(res.Redundant)))
			return nil
		},
	}
	cmd.Flags().IntVar(&peers, "peers", 8, "leechers")
	cmd.Flags().Var(&size, "size", "file size")
	cmd.Flags().Var(&piece, "piece", "piece length (a power of two, 16KiB to 16MiB; default as peer share chooses: 256KiB, 128KiB under 64MiB, smaller under 8MiB)")
	cmd.Flags().Var(&seedUp, "seed-up", "the seeder's upload cap")
	cmd.Flags().Var(&peerUp, "peer-up", "each leecher's upload cap")
	cmd.Flags().StringVar(&transport, "transport", "tcp", "tcp or quic")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the sample file's bytes")
	cmd.Flags().BoolVar(&pair, "pair", false, "measure an uncapped transfer between two peers against a bare stream")
	cmd.Flags().IntVar(&rounds, "rounds", 3, "with --pair: rounds of both transfers; medians are printed")
	cmd.Flags().IntVar(&contend, "contend", 0, "busy processes that load the CPU for the length of the run, as on a user's busy laptop")
	cmd.Flags().Float64Var(&seedEgress, "seed-egress", 0, "bound the seeder's upload to this many copies of the file (0: no bound), as peer distribute's origin does")
	return cmd
}

type percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

func pct(v []float64) percentiles {
	if len(v) == 0 {
		return percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return v[min(len(v)-1, int(q*float64(len(v))))] }
	return percentiles{at(0.50), at(0.90), at(0.99)}
}

type liveBench struct {
	Members       int         `json:"members"`
	Lookups       int         `json:"lookups"`
	LookupSuccess float64     `json:"lookup_success"`
	MeanHops      float64     `json:"mean_hops"`
	LookupMs      percentiles `json:"lookup_ms"`
	Puts          int         `json:"puts"`
	Gets          int         `json:"gets"`
	GetsFound     int         `json:"gets_found"`
	GetMs         percentiles `json:"get_ms"`
}

// benchLive measures lookups and kv round trips through a running peer.
// Each lookup's owner is checked against the ideal ring built from the
// alive members.
func benchLive(ctx context.Context, c *node.Client, lookups int, quiet bool) (liveBench, error) {
	var res liveBench
	mem, err := c.Members(ctx)
	if err != nil {
		return res, err
	}
	var ring []chord.ID
	owners := map[chord.ID]string{}
	for _, m := range mem.Members {
		if m.State != "alive" {
			continue
		}
		id, err := peer.Decode(m.ID)
		if err != nil {
			continue
		}
		cid := chord.HashID([]byte(id))
		ring = append(ring, cid)
		owners[cid] = m.ID
	}
	slices.SortFunc(ring, func(a, b chord.ID) int { return a.Cmp(b) })
	res.Members = len(ring)
	trueOwner := func(k chord.ID) string {
		i, _ := slices.BinarySearchFunc(ring, k, func(a, b chord.ID) int { return a.Cmp(b) })
		return owners[ring[i%len(ring)]]
	}
	say := func(f string, a ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, f+"\n", a...)
		}
	}
	var lat []float64
	hops, ok := 0, 0
	for i := range lookups {
		key := fmt.Sprintf("bench-%d-%d", rand.Uint64(), i)
		r, err := c.Lookup(ctx, node.LookupRequest{Key: key})
		if err != nil {
			continue
		}
		lat = append(lat, r.LatencyMs)
		hops += r.Hops
		if r.Owner.ID == trueOwner(chord.HashID([]byte(key))) {
			ok++
		}
		if (i+1)%200 == 0 {
			say("%d/%d lookups", i+1, lookups)
		}
	}
	res.Lookups = lookups
	res.LookupSuccess = float64(ok) / float64(lookups)
	if len(lat) > 0 {
		res.MeanHops = float64(hops) / float64(len(lat))
	}
	res.LookupMs = pct(lat)
	n := max(1, lookups/10)
	var keys []string
	for i := range n {
		k := fmt.Sprintf("bench-kv-%d-%d", rand.Uint64(), i)
		if _, err := c.Put(ctx, node.PutRequest{Key: k, Value: "v" + k, TTL: "10m"}); err == nil {
			keys = append(keys, k)
			res.Puts++
		}
	}
	var glat []float64
	for _, k := range keys {
		t0 := time.Now()
		r, err := c.KVGet(ctx, k)
		res.Gets++
		if err != nil || r.Value != "v"+k {
			continue
		}
		glat = append(glat, float64(time.Since(t0).Microseconds())/1000)
		res.GetsFound++
	}
	say("%d puts, %d gets", res.Puts, res.Gets)
	res.GetMs = pct(glat)
	return res, nil
}

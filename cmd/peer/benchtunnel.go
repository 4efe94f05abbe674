package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/bench/tunnelbench"
	"github.com/peer-overlay/peer/internal/units"
)

func newBenchTunnelCmd(g *globals) *cobra.Command {
	size := units.Size(256 << 20)
	var rounds, pings, conc int
	var transport string
	cmd := &cobra.Command{
		Use:   "tunnel",
		Short: "A TCP connection through a tunnel against a bare libp2p stream and plain TCP, on loopback",
		Long: `Two libp2p hosts in this process on 127.0.0.1: one exposes a sink and an
echo server, the other forwards local ports to them. Prints the throughput
of a forwarded connection beside a bare libp2p stream between the same
hosts and beside plain TCP (medians of --rounds, alternating), the
round-trip time of 64-byte requests on each (p50, p99), and how many of
--concurrent connections held open at once through one tunnel were served.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if transport != "tcp" && transport != "quic" {
				return usageError{fmt.Errorf("--transport %q: want tcp or quic", transport)}
			}
			if rounds < 1 || pings < 1 || conc < 1 || size < 1<<20 {
				return usageError{fmt.Errorf("--rounds, --pings and --concurrent must be positive, --size at least 1MiB")}
			}
			res, err := tunnelbench.Run(tunnelbench.Config{Bytes: int64(size), Rounds: rounds, Pings: pings, Concurrent: conc, Transport: transport})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(res)
			}
			fmt.Printf("throughput (%s per round, median of %d): tunnel %.0f MiB/s, bare stream %.0f MiB/s, TCP %.0f MiB/s; tunnel/stream %.2f\n",
				units.FormatBytes(float64(res.Bytes)), rounds, res.TunnelBps/(1<<20), res.StreamBps/(1<<20), res.TCPBps/(1<<20), res.TunnelOverStream)
			fmt.Printf("CPU per GiB moved (this process: both ends and the backend): tunnel %.2f s, bare stream %.2f s, TCP %.2f s; where both are CPU-bound, tunnel/stream can reach %.2f\n",
				res.TunnelCPUPerGiB, res.StreamCPUPerGiB, res.TCPCPUPerGiB, res.CPUBoundOverStream)
			fmt.Printf("round trip of 64 B (p50 / p99): tunnel %.3f / %.3f ms, bare stream %.3f / %.3f ms, TCP %.3f / %.3f ms; the tunnel adds %.3f ms at p50\n",
				res.TunnelRTTp50ms, res.TunnelRTTp99ms, res.StreamRTTp50ms, res.StreamRTTp99ms, res.TCPRTTp50ms, res.TCPRTTp99ms, res.AddedP50ms)
			fmt.Printf("%d connections at once through one tunnel: %d served, %d failed in %.1f s\n",
				res.Concurrent, res.ConcurrentServed, res.ConcurrentFailed, res.ConcurrentSeconds)
			if res.ConcurrentFailed > 0 {
				return fmt.Errorf("%d of %d concurrent connections failed: %s", res.ConcurrentFailed, res.Concurrent, res.ConcurrentFirstFail)
			}
			return nil
		},
	}
	cmd.Flags().Var(&size, "size", "bytes moved one way in each throughput round")
	cmd.Flags().IntVar(&rounds, "rounds", 5, "throughput rounds of each kind")
	cmd.Flags().IntVar(&pings, "pings", 2000, "request/response round trips of each kind")
	cmd.Flags().IntVar(&conc, "concurrent", 1000, "connections open at once through one tunnel")
	cmd.Flags().StringVar(&transport, "transport", "tcp", "tcp or quic")
	return cmd
}

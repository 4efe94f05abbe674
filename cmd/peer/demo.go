package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/bench/swarmbench"
	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

type demoResult struct {
	Peers      int       `json:"peers"`
	SizeBytes  int64     `json:"size_bytes"`
	InfoHash   string    `json:"infohash"`
	ReadySec   float64   `json:"cluster_ready_seconds"`
	Seconds    float64   `json:"seconds"`
	LowerBound float64   `json:"lower_bound_seconds"`
	Ratio      float64   `json:"ratio"`
	PerPeerSec []float64 `json:"per_peer_seconds"`
	Verified   int       `json:"copies_verified"`
	// The services step: a web server exposed by one peer under a name,
	// fetched through a forward on another.
	Tunnel    string  `json:"tunnel_answer"`
	TunnelSec float64 `json:"tunnel_seconds"`
}

func newDemoCmd(g *globals) *cobra.Command {
	var peers int
	size := units.Size(64 << 20)
	seedUp, peerUp := units.Rate(16<<20), units.Rate(8<<20)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a local cluster, share a sample file through the swarm, and reach a web server by name",
		Long: `Start --peers peers on 127.0.0.1 as child processes (as devnet does), make a
sample file of --size random bytes, share it from peer-0 and have every
other peer fetch it by its infohash alone: the peers find the seeder
through the ring and the manifest from it. Shows progress, checks every
copy byte for byte and prints the time beside the lower bound for the upload
caps given. Then peer-0 exposes a small web server under the name demo-web
and the last peer fetches a page from it through a forward, by name.
Removes everything it made.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if peers < 2 || peers > 64 {
				return usageError{fmt.Errorf("--peers %d: want 2 to 64", peers)}
			}
			if size < 1 {
				return usageError{fmt.Errorf("--size %q: want a size such as 64MiB", size.String())}
			}
			res, err := runDemo(cmd.Context(), peers, int64(size), seedUp, peerUp, g.json)
			if err != nil {
				if cmd.Context().Err() != nil && errors.Is(err, context.Canceled) {
					fmt.Fprintln(os.Stderr, "demo: interrupted; peers stopped and files removed")
					return nil
				}
				return err
			}
			if g.json {
				return printJSON(res)
			}
			fmt.Printf("%d peers got %s in %.1f s", res.Peers-1, units.FormatBytes(float64(res.SizeBytes)), res.Seconds)
			if res.LowerBound > 0 {
				fmt.Printf("; lower bound %.1f s (ratio %.2f)", res.LowerBound, res.Ratio)
			}
			fmt.Printf("; %d copies verified byte for byte\n", res.Verified)
			if res.Tunnel != "" {
				fmt.Printf("through a tunnel by name (demo-web), %.1f s after the expose: %q\n", res.TunnelSec, res.Tunnel)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&peers, "peers", 8, "peers in the cluster, the seeder included")
	cmd.Flags().Var(&size, "size", "size of the sample file")
	cmd.Flags().Var(&seedUp, "seed-up", "the seeder's upload cap (0: none)")
	cmd.Flags().Var(&peerUp, "peer-up", "each other peer's upload cap (0: none)")
	return cmd
}

func runDemo(ctx context.Context, n int, size int64, seedUp, peerUp units.Rate, quiet bool) (demoResult, error) {
	res := demoResult{Peers: n, SizeBytes: size}
	su, pu := float64(seedUp), float64(peerUp)
	say := func(f string, a ...any) {
		if !quiet {
			fmt.Fprintf(os.Stderr, f+"\n", a...)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	dir, err := os.MkdirTemp("", "peer-demo-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	say("starting %d peers in %s", n, dir)
	f := &devnetFlags{logLevel: "info", transport: "tcp", runArgs: func(i int) []string {
		if i == 0 {
			return []string{"--upload-rate", seedUp.String()}
		}
		return []string{"--upload-rate", peerUp.String()}
	}}
	peers, ready, err := startCluster(ctx, exe, dir, n, f)
	defer stopPeers(peers)
	if err != nil {
		return res, err
	}
	res.ReadySec = ready.Seconds()
	say("cluster ready in %.1f s; writing a %s sample file", ready.Seconds(), units.FormatBytes(float64(size)))
	src := filepath.Join(dir, "sample", "sample.bin")
	sum, err := swarm.WriteSample(src, size, uint64(time.Now().UnixNano()))
	if err != nil {
		return res, err
	}
	sh, err := peers[0].client.Share(ctx, node.ShareRequest{Path: src})
	if err != nil {
		return res, err
	}
	res.InfoHash = sh.InfoHash
	say("peer-0 shares %s as %s; %d peers fetch it by infohash", sh.Name, sh.InfoHash, n-1)
	start := time.Now()
	for _, p := range peers[1:] {
		if _, err := p.client.StartGet(ctx, node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(p.home, "downloads")}); err != nil {
			return res, fmt.Errorf("peer-%d: %w", p.index, err)
		}
	}
	if su > 0 && (pu > 0 || n == 2) {
		res.LowerBound = swarmbench.LowerBound(n-1, size, su, pu, 0)
	}
	var bar *progress
	if !quiet {
		bar = newProgress("MiB fetched, all peers", int((n-1)*int(size>>20)))
	}
	deadline := time.Now().Add(time.Duration(10*res.LowerBound+120) * time.Second)
	res.PerPeerSec = make([]float64, n-1)
	paths := make([]string, n-1)
	for {
		done, bytes := 0, int64(0)
		for i, p := range peers[1:] {
			st, err := p.client.SwarmStatus(ctx, sh.InfoHash)
			if err != nil {
				return res, fmt.Errorf("peer-%d: %w", p.index, err)
			}
			if st.Error != "" {
				return res, fmt.Errorf("peer-%d: %s", p.index, st.Error)
			}
			if st.Complete {
				done++
				res.PerPeerSec[i] = st.Seconds
				paths[i] = st.Path
			}
			if st.Pieces > 0 {
				bytes += size * int64(st.Have) / int64(st.Pieces)
			}
		}
		if bar != nil {
			bar.set(int(bytes >> 20))
		}
		if done == n-1 {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d peers finished in %s", done, n-1, time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if bar != nil {
		bar.done()
	}
	for _, t := range res.PerPeerSec {
		res.Seconds = max(res.Seconds, t)
	}
	if res.LowerBound > 0 {
		res.Ratio = res.Seconds / res.LowerBound
	}
	for i, p := range paths {
		got, err := swarm.FileSHA1(p)
		if err != nil || got != sum {
			return res, fmt.Errorf("peer-%d's copy %s differs from the original (%v)", i+1, p, err)
		}
		res.Verified++
	}
	if n >= 2 {
		if err := demoTunnel(ctx, peers[0], peers[n-1], &res, say); err != nil {
			return res, fmt.Errorf("services: %w", err)
		}
	}
	return res, nil
}

// demoTunnel serves a page on loopback, exposes it from one peer as
// "demo-web" and fetches it on another through a forward, by name.
func demoTunnel(ctx context.Context, from, to *devPeer, res *demoResult, say func(string, ...any)) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from peer-%d's web server", from.index)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	start := time.Now()
	if _, err := from.client.Expose(ctx, node.ExposeRequest{Name: "demo-web", Addr: ln.Addr().String()}); err != nil {
		return fmt.Errorf("peer-%d: expose: %w", from.index, err)
	}
	fw, err := to.client.Forward(ctx, node.ForwardRequest{Name: "demo-web", Listen: "127.0.0.1:0"})
	if err != nil {
		return fmt.Errorf("peer-%d: forward: %w", to.index, err)
	}
	say("peer-%d exposes a web server as demo-web; peer-%d forwards %s to it", from.index, to.index, fw.Listen)
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := func() (string, error) {
			resp, err := client.Get("http://" + fw.Listen + "/")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}()
		if err == nil && body != "" {
			res.Tunnel, res.TunnelSec = body, time.Since(start).Seconds()
			return nil
		}
		// The provider's record reaches the ring in the background.
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer through the tunnel in 30 s: %v", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

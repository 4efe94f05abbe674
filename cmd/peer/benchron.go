package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/bench/ronbench"
	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
)

// ronReport is what `peer bench ron --json` prints.
type ronReport struct {
	FailoverSeconds float64   `json:"failover_seconds"` // median
	Failovers       []float64 `json:"failovers"`
	// HealSeconds is the median time from a heal until routes and new
	// streams are back on the direct path (netns mode only; each cut held
	// for CutSeconds first).
	HealSeconds float64       `json:"heal_seconds,omitempty"`
	Heals       []float64     `json:"heals,omitempty"`
	CutSeconds  float64       `json:"cut_seconds,omitempty"`
	Mode        string        `json:"mode"` // "netns" or "loopback-shim"
	ModeNote    string        `json:"mode_note"`
	Overhead    []ronOverhead `json:"overhead"`
}

type ronOverhead struct {
	Members int     `json:"members"`
	Bits    float64 `json:"bits_per_second_per_peer"`
}

func newBenchRONCmd(g *globals) *cobra.Command {
	var cuts int
	var window time.Duration
	var groups string
	var shim bool
	var cutFor time.Duration
	cmd := &cobra.Command{
		Use:   "ron",
		Short: "Failover time after a link cut, and probe plus link-state overhead per peer by group size",
		Long: `Failover: as root, a network-namespace testbed of --cuts+2 hosts, one peer
process each; peer 0 pings a peer every 50 ms on one kept stream, the link
between them is cut in the router (packets dropped silently), and the time
until a ping is answered again (through an intermediate) is measured; each
cut takes a fresh peer, is held for --cut-for, then healed, and the time
until routes and new streams are back on the direct path is measured. Without root, or with --shim, the same on loopback
in one process, with a user-space shim that refuses and closes the cut
connections (noticed sooner than silent loss, so a lower bound).

Overhead: for each group size in --members, that many members on loopback
in one process settle, then what their routers send (probes, answers,
rows, with per-message framing) is measured over --window.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cuts < 1 || cuts > 20 {
				return usageError{fmt.Errorf("--cuts %d: want 1 to 20", cuts)}
			}
			if cutFor < 0 || cutFor > 10*time.Minute {
				return usageError{fmt.Errorf("--cut-for %v: want 0 to 10m", cutFor)}
			}
			if window < time.Second {
				return usageError{fmt.Errorf("--window %v: want at least 1s", window)}
			}
			var sizes []int
			for _, f := range strings.Split(groups, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 2 || n > 64 {
					return usageError{fmt.Errorf("--members %q: want sizes from 2 to 64, comma-separated", groups)}
				}
				sizes = append(sizes, n)
			}
			ctx := cmd.Context()
			progress := func(s string) { fmt.Fprintln(os.Stderr, s) }
			rep := ronReport{Failovers: []float64{}, Overhead: []ronOverhead{}}
			var err error
			if why := testbedAvailable(); why == nil && !shim {
				rep.Mode = "netns"
				rep.ModeNote = "cuts in a network-namespace testbed: packets dropped silently in the router"
				rep.CutSeconds = cutFor.Seconds()
				rep.Failovers, rep.Heals, err = failoverNetns(ctx, cuts, cutFor, progress)
				rep.HealSeconds = stats.Median(rep.Heals)
			} else {
				rep.Mode = "loopback-shim"
				if shim {
					rep.ModeNote = "asked for with --shim"
				} else {
					rep.ModeNote = "no namespace testbed here (" + why.Error() + ")"
				}
				rep.ModeNote += "; cuts by a user-space shim that refuses and closes connections, noticed sooner than silent loss: a lower bound"
				rep.Failovers, err = ronbench.FailoverShim(ctx, cuts+2, cuts, 50*time.Millisecond, progress)
			}
			if err != nil {
				return fmt.Errorf("bench ron: failover: %w", err)
			}
			rep.FailoverSeconds = stats.Median(rep.Failovers)
			for _, n := range sizes {
				progress(fmt.Sprintf("ron bench: overhead with %d members", n))
				bits, err := ronbench.Overhead(ctx, n, window, nil)
				if err != nil {
					return fmt.Errorf("bench ron: overhead with %d members: %w", n, err)
				}
				rep.Overhead = append(rep.Overhead, ronOverhead{Members: n, Bits: bits})
			}
			if g.json {
				return printJSON(rep)
			}
			fmt.Printf("failover after a link cut (%s): median %.2f s over %d cuts %v\n", rep.Mode, rep.FailoverSeconds, len(rep.Failovers), rounded(rep.Failovers))
			fmt.Printf("  %s\n", rep.ModeNote)
			if len(rep.Heals) > 0 {
				fmt.Printf("back on the direct path after a heal (cuts held %.0f s): median %.2f s %v\n", rep.CutSeconds, rep.HealSeconds, rounded(rep.Heals))
			}
			for _, o := range rep.Overhead {
				fmt.Printf("overhead, %2d members: %.1f kbit/s per peer\n", o.Members, o.Bits/1000)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&cuts, "cuts", 5, "link cuts to measure failover over")
	cmd.Flags().DurationVar(&window, "window", 30*time.Second, "how long to measure overhead for, per group size")
	cmd.Flags().StringVar(&groups, "members", "8,16,50", "group sizes to measure overhead for")
	cmd.Flags().DurationVar(&cutFor, "cut-for", 15*time.Second, "in the namespace testbed: how long each cut is held before it heals")
	cmd.Flags().BoolVar(&shim, "shim", false, "use the loopback fault shim even where the namespace testbed is available")
	return cmd
}

func rounded(xs []float64) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return out
}

// sessionFailover pings p from the peer behind c on one kept stream, calls
// cut once pings flow, and returns the time from the cut until a ping is
// answered again.
func sessionFailover(ctx context.Context, c *node.Client, p peer.ID, cut func() error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	evs := make(chan overlay.PingEvent, 1024)
	ended := make(chan error, 1)
	go func() {
		req := node.PingSessionRequest{Peer: p, Count: 1200, Interval: 50 * time.Millisecond, Timeout: 300 * time.Millisecond}
		ended <- c.PingSession(ctx, req, func(ev overlay.PingEvent) {
			select {
			case evs <- ev:
			default:
			}
		})
	}()
	answered := 0
	var cutAt time.Time
	for {
		select {
		case <-ctx.Done():
			if cutAt.IsZero() {
				return 0, fmt.Errorf("pings to %s were not answered before the cut", p)
			}
			return 0, fmt.Errorf("traffic to %s did not flow again within a minute of the cut", p)
		case err := <-ended:
			if err == nil {
				err = fmt.Errorf("the ping session ended")
			}
			return 0, fmt.Errorf("ping session to %s: %w", p, err)
		case ev := <-evs:
			if ev.Error != "" {
				continue
			}
			if cutAt.IsZero() {
				if answered++; answered == 3 {
					// From when the cut is in force: a ping sent while
					// the rule was going in may still have got through.
					if err := cut(); err != nil {
						return 0, err
					}
					cutAt = time.Now()
				}
				continue
			}
			if time.UnixMilli(ev.AtMs).After(cutAt) {
				return time.Since(cutAt).Seconds(), nil
			}
		}
	}
}

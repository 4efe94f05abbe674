package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/stats"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
)

// pingReport is what `peer ping --json` prints.
type pingReport struct {
	Peer     peer.ID     `json:"peer"`
	Pings    []pingReply `json:"pings"`
	Sent     int         `json:"sent"`
	Answered int         `json:"answered"`
	Loss     float64     `json:"loss"`
	MinMs    float64     `json:"rtt_min_ms,omitempty"`
	MedianMs float64     `json:"rtt_median_ms,omitempty"`
	MaxMs    float64     `json:"rtt_max_ms,omitempty"`
}

type pingReply struct {
	Seq    int     `json:"seq"`
	Stream int     `json:"stream,omitempty"` // with --keep-stream: which stream carried it
	RTTms  float64 `json:"rtt_ms,omitempty"`
	Path   string  `json:"path,omitempty"` // "direct" or "via ID"
	Via    peer.ID `json:"via,omitempty"`
	Error  string  `json:"error,omitempty"`
}

func newPingCmd(g *globals) *cobra.Command {
	var count int
	var interval, timeout time.Duration
	var keep bool
	cmd := &cobra.Command{
		Use:   "ping PEER",
		Short: "Ping a peer over the overlay: each reply's round-trip time and the path it took (direct, or via which peer)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := peer.Decode(args[0])
			if err != nil {
				return usageError{fmt.Errorf("bad peer ID %q: %v", args[0], err)}
			}
			if count < 1 || count > 1_000_000 {
				return usageError{fmt.Errorf("--count %d: want 1 to 1000000", count)}
			}
			if interval < time.Millisecond || timeout <= 0 || timeout > time.Minute {
				return usageError{fmt.Errorf("--interval must be at least 1ms and --timeout in (0, 1m]")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if self, err := c.ID(ctx); err != nil {
				return err
			} else if self.ID == p.String() {
				return usageError{fmt.Errorf("%s is this peer's own ID", p)}
			}
			rep := pingReport{Peer: p, Pings: []pingReply{}}
			if !g.json {
				fmt.Printf("PING %s over the overlay\n", p)
			}
			show := func(r pingReply) {
				if g.json {
					return
				}
				on := ""
				if r.Stream > 0 {
					on = fmt.Sprintf(" stream=%d", r.Stream)
				}
				if r.Error != "" {
					fmt.Printf("seq=%d%s no reply: %s\n", r.Seq, on, r.Error)
				} else {
					fmt.Printf("seq=%d%s rtt=%.2f ms %s\n", r.Seq, on, r.RTTms, r.Path)
				}
			}
			if keep {
				req := node.PingSessionRequest{Peer: p, Count: count, Interval: interval, Timeout: timeout}
				err := c.PingSession(ctx, req, func(ev overlay.PingEvent) {
					r := pingReply{Seq: ev.Seq, Stream: ev.Stream, Error: ev.Error}
					rep.Sent++
					if ev.Error == "" {
						rep.Answered++
						r.RTTms, r.Via, r.Path = ev.RTTms, ev.Via, overlay.PingResult{Via: ev.Via}.Path()
					}
					rep.Pings = append(rep.Pings, r)
					show(r)
				})
				if err != nil && ctx.Err() == nil {
					return err
				}
				count = 0 // done
			}
			for seq := 1; seq <= count && ctx.Err() == nil; seq++ {
				if seq > 1 {
					select {
					case <-ctx.Done():
					case <-time.After(interval):
					}
					if ctx.Err() != nil {
						break
					}
				}
				res, err := c.Ping(ctx, p, timeout)
				rep.Sent++
				r := pingReply{Seq: seq}
				if err != nil {
					if ctx.Err() != nil {
						rep.Sent--
						break
					}
					r.Error = err.Error()
				} else {
					rep.Answered++
					r.RTTms, r.Via, r.Path = res.RTTms, res.Via, res.Path()
				}
				rep.Pings = append(rep.Pings, r)
				show(r)
			}
			summarize(&rep)
			if g.json {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				fmt.Printf("--- %d sent, %d answered, %.0f%% lost", rep.Sent, rep.Answered, 100*rep.Loss)
				if rep.Answered > 0 {
					fmt.Printf("; rtt min/median/max %.2f/%.2f/%.2f ms", rep.MinMs, rep.MedianMs, rep.MaxMs)
				}
				fmt.Println()
			}
			if rep.Answered == 0 && rep.Sent > 0 {
				return fmt.Errorf("no replies from %s", p)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&count, "count", "c", 4, "pings to send")
	cmd.Flags().DurationVarP(&interval, "interval", "i", time.Second, "time between pings")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for each reply")
	cmd.Flags().BoolVar(&keep, "keep-stream", false, "ping on one stream kept open, replaced (on the then-best path) when a ping goes unanswered, as a long-lived application stream is")
	return cmd
}

func summarize(rep *pingReport) {
	var rtts []float64
	for _, r := range rep.Pings {
		if r.Error == "" {
			rtts = append(rtts, r.RTTms)
		}
	}
	if rep.Sent > 0 {
		rep.Loss = 1 - float64(rep.Answered)/float64(rep.Sent)
	}
	if len(rtts) == 0 {
		return
	}
	rep.MinMs, rep.MaxMs = slices.Min(rtts), slices.Max(rtts)
	rep.MedianMs = stats.Median(rtts)
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/overlay"
)

func newRoutesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "routes",
		Short: "Show the RON link table: each member's direct RTT, loss and throughput estimate, and the best path per metric",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Routes(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			if len(r.Routes) == 0 {
				fmt.Println("no other members yet")
				return nil
			}
			fmt.Printf("%-14s %9s %6s %12s  %-16s %-16s %-16s\n", "member", "rtt", "loss", "throughput", "latency via", "loss via", "throughput via")
			for _, ri := range r.Routes {
				d := ri.Direct
				rtt := "-"
				if d.RTTms > 0 {
					rtt = fmt.Sprintf("%.2fms", d.RTTms)
				}
				if d.Down {
					rtt = "down"
				}
				fmt.Printf("%-14s %9s %5.0f%% %10s/s  %-16s %-16s %-16s\n", short(ri.Peer.String()), rtt, 100*d.Loss,
					units.FormatBytes(d.Tput), via(ri.Best.Latency), via(ri.Best.Loss), via(ri.Best.Throughput))
			}
			return nil
		},
	}
}

func short(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-12:]
	}
	return id
}

func via(p overlay.PathInfo) string {
	switch {
	case !p.OK:
		return "(no path)"
	case p.Via == "":
		return "direct"
	}
	return short(p.Via.String())
}

package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newNetcheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "netcheck",
		Short: "Show how the running peer is reached: public addresses, NAT mapping, supernodes, reservations, role, and the path to each peer",
		Long: `netcheck asks the running daemon, so the answers come from the daemon's own
QUIC socket and mapping: the public TCP and QUIC addresses, the NAT mapping
(public; easy: endpoint-independent; hard: endpoint-dependent; unknown until
two STUN servers have answered) and whether ports are preserved, the STUN
servers with their round trips, the elected supernodes, the relay
reservations, this peer's role and why, and for each known peer whether it
is reached directly, hole-punched, relayed (via which supernode) or through
RON one-hop forwarding.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			nc, err := c.Netcheck(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(nc)
			}
			for _, a := range nc.TCP {
				fmt.Printf("tcp        %s\n", a)
			}
			for _, a := range nc.QUIC {
				fmt.Printf("quic       %s\n", a)
			}
			m := nc.Mapping
			if nc.MappedAddr != "" {
				m += " at " + nc.MappedAddr
			}
			if nc.PortPreserved {
				m += ", port preserved"
			}
			if nc.ClassifiedAfterSec >= 0 {
				m += fmt.Sprintf(" (classified %.1f s after the first answer)", nc.ClassifiedAfterSec)
			}
			fmt.Printf("mapping    %s\n", m)
			if nc.STUNOff != "" {
				fmt.Printf("stun       off: %s\n", nc.STUNOff)
			}
			for _, s := range nc.STUNServers {
				fmt.Printf("stun       %s  %.1f ms, saw us at %s, %.0f s ago\n", s.Addr, s.RTTms, s.Mapped, s.AgoSec)
			}
			fmt.Printf("reachable  %v (a member has dialed this peer directly)\n", nc.Reachable)
			fmt.Printf("role       %s: %s\n", nc.Role, nc.RoleWhy)
			if len(nc.Supernodes) == 0 {
				fmt.Println("supernodes none elected yet")
			}
			for _, s := range nc.Supernodes {
				fmt.Printf("supernode  %s  %.1f ms\n", s.ID, s.RTTms)
			}
			if len(nc.Reservations) == 0 {
				fmt.Println("relays     no reservations")
			}
			for _, r := range nc.Reservations {
				fmt.Printf("relay      %s  expires in %.0f s\n", r.Supernode, r.ExpiresInSec)
			}
			if nc.RelayOn || nc.Relayed.Bytes > 0 {
				fmt.Printf("relay      on: %d circuits, %d reservations, %d bytes relayed for the group's NATed members\n", nc.Relayed.Circuits, nc.Relayed.Reservations, nc.Relayed.Bytes)
			}
			fmt.Printf("punches    %d tried, %d direct, %d refused by the pair policy\n", nc.Punches.Attempts, nc.Punches.Successes, nc.Punches.Refused)
			fmt.Printf("overhead   %.1f B/s of STUN\n", nc.OverheadBps)
			if len(nc.Peers) == 0 {
				return nil
			}
			fmt.Println()
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tMAPPING\tPATH")
			for _, p := range nc.Peers {
				path := p.Path
				if p.Via != "" {
					path += " via " + p.Via
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.ID, p.Mapping, path)
			}
			return tw.Flush()
		},
	}
}

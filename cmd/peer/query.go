package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/node"
)

func newIDCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print the running peer's ID and every address others can dial it at",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.ID(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(info)
			}
			for _, a := range info.Addrs {
				fmt.Println(a)
			}
			return nil
		},
	}
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Print the running peer's ID, addresses, uptime, version and member count",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(st)
			}
			fmt.Printf("id       %s\n", st.ID)
			for i, a := range st.Addrs {
				label := "addrs   "
				if i > 0 {
					label = "        "
				}
				fmt.Printf("%s %s\n", label, a)
			}
			fmt.Printf("version  %s\n", st.Version)
			fmt.Printf("uptime   %s\n", (time.Duration(st.UptimeSeconds) * time.Second).String())
			fmt.Printf("members  %d\n", st.Members)
			fmt.Printf("group    %s\n", groupLine(st.Group))
			fmt.Printf("reach    %s\n", reachLine(st.Reach))
			fmt.Printf("conns    %d tcp, %d quic\n", st.Connections["tcp"], st.Connections["quic"])
			if st.HTTP != "" {
				fmt.Printf("http     %s (metrics, gateway, dashboard)\n", st.HTTP)
			}
			fmt.Printf("home     %s (pid %d)\n", st.Home, st.PID)
			return nil
		},
	}
}

func newMembersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the peers of the group with their state (alive, suspect, dead, left)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ms, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(ms)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tREACH\tADDR")
			for _, m := range ms.Members {
				id := m.ID
				if m.Self {
					id += " (self)"
				}
				reach := "-"
				if m.Reach != nil {
					reach = reachLine(*m.Reach)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id, m.State, reach, m.Addr)
			}
			return tw.Flush()
		},
	}
}

// reachLine says in a few words how a peer is reached: "public, reachable,
// supernode", "easy NAT", "hard NAT", "unknown".
func reachLine(r node.ReachInfo) string {
	s := r.Mapping
	if r.Mapping == "easy" || r.Mapping == "hard" {
		s += " NAT"
	}
	if r.Reachable {
		s += ", reachable"
	}
	if r.Role == "supernode" {
		s += ", supernode"
	}
	return s
}

// groupLine says what the group's kind means.
func groupLine(g string) string {
	switch g {
	case "closed":
		return "closed (cluster key; members only)"
	case "open":
		return "open (anyone may join)"
	}
	return "unknown (an older daemon)"
}

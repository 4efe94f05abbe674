package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newDashboardCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dashboard",
		Short: "Print the URL of the running peer's dashboard (its HTTP face also serves /metrics and the gateway)",
		Long: `Print the URL of the running peer's dashboard: the ring, the RON link
matrix, swarms, distribute jobs and NAT roles, updated every second. The
same listener serves Prometheus metrics at /metrics and files of swarms at
/swarm/INFOHASH/PATH. It listens where "peer run --http" or the config's
"http" setting says (127.0.0.1 on a free port by default). Bound beyond
loopback it asks for the control token, which the printed URL carries:
treat that URL as a password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			u, err := c.DashboardURL(cmd.Context())
			if err != nil {
				return err
			}
			if u == "" {
				return errors.New("the HTTP face is off: start the peer with --http HOST:PORT")
			}
			if g.json {
				return printJSON(map[string]string{"url": u})
			}
			fmt.Println(u)
			return nil
		},
	}
}

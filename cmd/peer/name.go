package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/names"
	"github.com/peer-overlay/peer/node"
)

func newNameCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "name",
		Short: "Claim, resolve and release DNS-style names of peers",
		Long: `A name is an owned record on the ring: the first peer to claim it holds
it, only that peer can update or release it, and its daemon renews the
claim before its lease runs out for as long as it holds the name.
Names are DNS-style: lowercase letters, digits and hyphens, labels of at
most 63 characters, optionally dotted.`,
	}
	var lease time.Duration
	var services []string
	claim := &cobra.Command{
		Use:   "claim NAME",
		Short: "Claim NAME for this peer (or update the services it lists)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := names.Validate(args[0]); err != nil {
				return usageError{err}
			}
			if lease < 0 {
				return usageError{fmt.Errorf("--lease %s: want a positive duration", lease)}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := node.NameRequest{Name: args[0], Services: services}
			if lease > 0 {
				req.Lease = lease.String()
			}
			r, err := c.ClaimName(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("%s is this peer's (%s), on %d replicas, renewed before %s\n", r.Name, r.Owner, r.Replicas, r.Expires)
			return nil
		},
	}
	claim.Flags().DurationVar(&lease, "lease", 0, "how long the record lives between renewals (default 1h)")
	claim.Flags().StringSliceVar(&services, "service", nil, "a service offered under the name (repeatable)")
	resolve := nameVerb(g, "resolve NAME", "Print the peer that holds NAME and the services it lists",
		(*node.Client).ResolveName, func(r node.NameInfo) {
			fmt.Printf("%s  %s", r.Name, r.Owner)
			for _, s := range r.Services {
				fmt.Printf("  %s", s)
			}
			fmt.Println()
		})
	release := nameVerb(g, "release NAME", "Release a name this peer holds, at once",
		(*node.Client).ReleaseName, func(r node.NameInfo) {
			fmt.Printf("released %s on %d replicas\n", r.Name, r.Replicas)
		})
	list := &cobra.Command{
		Use:   "list",
		Short: "List the names this peer holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Names(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			if len(r.Names) == 0 {
				fmt.Println("this peer holds no names")
			}
			for _, n := range r.Names {
				fmt.Printf("%-24s expires %s", n.Name, n.Expires)
				for _, s := range n.Services {
					fmt.Printf("  %s", s)
				}
				fmt.Println()
			}
			return nil
		},
	}
	cmd.AddCommand(claim, resolve, release, list)
	return cmd
}

// nameVerb is a verb that takes one name, asks the daemon with call and
// prints the answer.
func nameVerb(g *globals, use, short string, call func(*node.Client, context.Context, string) (node.NameInfo, error), show func(node.NameInfo)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := names.Validate(args[0]); err != nil {
				return usageError{err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := call(c, cmd.Context(), args[0])
			if errors.Is(err, node.ErrNotFoundAPI) {
				return fmt.Errorf("no peer holds the name %q", args[0])
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			show(r)
			return nil
		},
	}
}

package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/names"
	"github.com/peer-overlay/peer/node"
)

func newExposeCmd(g *globals) *cobra.Command {
	var allow []string
	var class string
	var proxy bool
	cmd := &cobra.Command{
		Use:   "expose NAME ADDR",
		Short: "Offer the TCP service at ADDR to other peers under NAME",
		Long: `Offer the TCP service at ADDR (host:port) under NAME: any peer can then
reach it with 'peer forward NAME'. Several peers exposing one name form a
pool. This peer connects only to ADDR, never anywhere a caller asks, and
with --allow only for the peers listed (peer IDs or names). The expose is
saved in the home and comes back after a restart.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := names.Validate(args[0]); err != nil {
				return usageError{err}
			}
			if _, _, err := net.SplitHostPort(args[1]); err != nil {
				return usageError{fmt.Errorf("ADDR %q: want host:port", args[1])}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Expose(cmd.Context(), node.ExposeRequest{Name: args[0], Addr: args[1], Allow: allow, Class: class, ProxyProtocol: proxy})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("exposing %s (%s)\n", args[0], args[1])
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&allow, "allow", nil, "only these peers (IDs or names) may connect (repeatable)")
	cmd.Flags().StringVar(&class, "class", "", "traffic class forwarders use: latency or throughput")
	cmd.Flags().BoolVar(&proxy, "proxy-protocol", false, "send the backend a PROXY protocol v2 header with the caller's peer ID")
	return cmd
}

func newForwardCmd(g *globals) *cobra.Command {
	var listen, class string
	cmd := &cobra.Command{
		Use:   "forward NAME --listen ADDR",
		Short: "Open a local port that reaches the service exposed as NAME",
		Long: `Open a local TCP port (--listen host:port; port 0 picks one) whose
connections each travel to a peer that exposes NAME: the one with the best
path for the class first, another if it fails. The forward is saved in the
home and comes back after a restart.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := names.Validate(args[0]); err != nil {
				return usageError{err}
			}
			if _, _, err := net.SplitHostPort(listen); err != nil {
				return usageError{fmt.Errorf("--listen %q: want host:port", listen)}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Forward(cmd.Context(), node.ForwardRequest{Name: args[0], Listen: listen, Class: class})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("forwarding %s to %s\n", r.Listen, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "local address to listen on")
	cmd.Flags().StringVar(&class, "class", "", "traffic class: latency or throughput")
	return cmd
}

// newStopServiceCmd is unexpose or unforward: what is "exposed" or
// "forwarded".
func newStopServiceCmd(g *globals, use, short, what string, call func(*node.Client, context.Context, string) (node.ServiceDone, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := call(c, cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			if !r.Done {
				return fmt.Errorf("%q is not %s by this peer", args[0], what)
			}
			fmt.Printf("stopped %s\n", args[0])
			return nil
		},
	}
}

func newServicesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "services",
		Short: "List the services this peer exposes and forwards, with their counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Services(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			if len(r.Expose)+len(r.Forward) == 0 {
				fmt.Println("no services exposed or forwarded")
			}
			for _, e := range r.Expose {
				fmt.Printf("expose   %-16s %-22s conns %d (active %d, refused %d)  in %d B  out %d B\n",
					e.Name, e.Addr, e.Conns, e.Active, e.Refused, e.BytesIn, e.BytesOut)
			}
			for _, f := range r.Forward {
				fmt.Printf("forward  %-16s %-22s conns %d (active %d, failed %d)  out %d B  in %d B\n",
					f.Name, f.Listen, f.Conns, f.Active, f.Failed, f.BytesOut, f.BytesIn)
			}
			return nil
		},
	}
}

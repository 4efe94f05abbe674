package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/node"
)

func newRingCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ring",
		Short: "Show the running peer's place on the Chord ring: predecessor, successors, fingers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Ring(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("id           %s\nchord id     %s\n", r.ID, r.ChordID)
			if !r.Joined {
				fmt.Println("state        not part of a ring yet")
			}
			if r.Predecessor != nil {
				fmt.Printf("predecessor  %s  %s\n", r.Predecessor.ChordID[:8], r.Predecessor.ID)
			} else {
				fmt.Println("predecessor  (unknown)")
			}
			for i, s := range r.Successors {
				label := "successors  "
				if i > 0 {
					label = "            "
				}
				fmt.Printf("%s %s  %s\n", label, s.ChordID[:8], s.ID)
			}
			fmt.Printf("fingers      %d distinct\n", len(r.Fingers))
			return nil
		},
	}
}

func newLookupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "lookup KEY",
		Short: "Find the peer that owns SHA-1(KEY) on the ring, with the hop count and latency",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Lookup(cmd.Context(), node.LookupRequest{Key: args[0]})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("key      %s (chord id %s)\nowner    %s (%s)\nhops     %d\nlatency  %.1f ms\n",
				args[0], r.ChordID, r.Owner.ID, r.Owner.ChordID[:8], r.Hops, r.LatencyMs)
			return nil
		},
	}
}

func newKVCmd(g *globals) *cobra.Command {
	kv := &cobra.Command{
		Use:   "kv",
		Short: "Store and fetch signed key/value records in the ring",
	}
	var ttl time.Duration
	put := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Store VALUE under KEY on the key's replicas (signed by this peer)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl %s: want a positive duration", ttl)}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			req := node.PutRequest{Key: args[0], Value: args[1]}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			r, err := c.Put(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Printf("stored %q on %d replicas, expires %s\n", r.Key, r.Replicas, r.Expires)
			return nil
		},
	}
	put.Flags().DurationVar(&ttl, "ttl", 0, "how long the record lives (default 24h, at most 168h)")
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value stored under KEY",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.KVGet(cmd.Context(), args[0])
			if errors.Is(err, node.ErrNotFoundAPI) {
				return fmt.Errorf("no value for key %q", args[0])
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			fmt.Fprintln(os.Stdout, r.Value)
			return nil
		},
	}
	kv.AddCommand(put, get)
	return kv
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/mail"
	"github.com/peer-overlay/peer/node"
)

func newSendCmd(g *globals) *cobra.Command {
	var file string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "send PEER|NAME [TEXT]",
		Short: "Send a message, held for the recipient while it is away",
		Long: `The message is signed by this peer and sealed to the recipient's key.
A recipient that is up takes it at once. Otherwise the replicas of its
mailbox hold it (the send is accepted once 2 of them do) until it comes
back and collects it, or until it expires (--ttl, 7 days by default): then
this peer's inbox gets a notice that it was not delivered.
Text and file together are at most 11 KiB; share larger files with
'peer share' and send their magnet.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := node.SendRequest{To: args[0]}
			if len(args) == 2 {
				req.Text = args[1]
			}
			if file != "" {
				data, err := os.ReadFile(file)
				if err != nil {
					return usageError{fmt.Errorf("--file: %w", err)}
				}
				req.Data, req.FileName = data, filepath.Base(file)
			}
			if err := (mail.Message{Text: req.Text, FileName: req.FileName, Data: req.Data}).Check(); err != nil {
				return usageError{err}
			}
			if ttl < 0 || ttl > mail.MaxTTL {
				return usageError{fmt.Errorf("--ttl %s: want a duration of at most %s", ttl, mail.MaxTTL)}
			}
			if ttl > 0 {
				req.TTL = ttl.String()
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			r, err := c.Send(cmd.Context(), req)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(r)
			}
			switch r.Via {
			case "direct":
				fmt.Printf("delivered %s to %s directly (%.1f ms)\n", r.ID, r.To, r.Millis)
			default:
				fmt.Printf("accepted %s for %s: held by %d replicas of its mailbox (%s) until it collects it (%.1f ms)\n",
					r.ID, r.To, len(r.Holders), strings.Join(r.Holders, ", "), r.Millis)
				if r.DirectErr != "" {
					fmt.Printf("  (it did not answer directly: %s)\n", r.DirectErr)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "send this file's contents (at most 11 KiB)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the message waits for its recipient (default 168h)")
	return cmd
}

func newInboxCmd(g *globals) *cobra.Command {
	var follow, trace bool
	var after uint64
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "List the messages this peer received, and notices of messages not delivered",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			enc := json.NewEncoder(os.Stdout)
			printed := 0
			for {
				wait := time.Duration(0)
				if follow {
					wait = 30 * time.Second
				}
				in, err := c.Inbox(cmd.Context(), after, wait)
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				for _, e := range in.Messages {
					after = e.N
					printed++
					if g.json {
						if err := enc.Encode(e); err != nil {
							return err
						}
						continue
					}
					printEntry(e, trace)
				}
				if !follow {
					if len(in.Messages) > 0 {
						continue // the next page
					}
					if printed == 0 && !g.json {
						fmt.Println("no messages")
					}
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing messages as they come")
	cmd.Flags().BoolVar(&trace, "trace", false, "print each message's trace: the hops it took")
	cmd.Flags().Uint64Var(&after, "after", 0, "only messages numbered after this")
	return cmd
}

func printEntry(e mail.Entry, trace bool) {
	when := e.Received.Local().Format("2006-01-02 15:04:05")
	switch e.Via {
	case "notice":
		fmt.Printf("#%d %s  NOTICE  %s\n", e.N, when, e.Text)
		return
	}
	fmt.Printf("#%d %s  from %s  (%s)\n", e.N, when, e.From, e.Via)
	if e.Text != "" {
		for _, l := range strings.Split(e.Text, "\n") {
			fmt.Printf("    %s\n", l)
		}
	}
	if e.FileName != "" || len(e.Data) > 0 {
		fmt.Printf("    [file %q, %d bytes: 'peer inbox --json' carries its data]\n", e.FileName, len(e.Data))
	}
	if trace {
		for _, l := range e.Trace {
			fmt.Printf("    | %s\n", l)
		}
	}
}

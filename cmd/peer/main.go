// Command peer is one peer of the overlay: the daemon (`peer run`) and the
// verbs that talk to a running daemon through its control API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/node"
)

// Exit codes: 1 for a failure, 2 for a command line that is wrong.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks a mistake in the command line.
type usageError struct{ error }

// globals are the flags every verb takes.
type globals struct {
	home string
	json bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return
	}
	code := exitFailure
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		code = exitUsage
		name := "peer"
		if cmd != nil {
			name = cmd.CommandPath()
		}
		fmt.Fprintf(os.Stderr, "peer: %v (see `%s --help`)\n", err, name)
	} else {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
	}
	os.Exit(code)
}

// isCobraUsage recognises cobra's own errors for unknown verbs and bad
// argument counts, which it does not type.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.Contains(s, "arg(s)") || strings.HasPrefix(s, "invalid argument")
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "peer",
		Short:         "A peer of the overlay: Chord ring, RON routing, NAT traversal, file swarm",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       node.Version,
	}
	root.PersistentFlags().StringVar(&g.home, "home", "", "the peer's home directory (default $PEER_HOME, else ~/.peer)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON instead of text")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		newInitCmd(g),
		newRunCmd(g),
		newIDCmd(g),
		newStatusCmd(g),
		newMembersCmd(g),
		newNetcheckCmd(g),
		newRingCmd(g),
		newRoutesCmd(g),
		newPingCmd(g),
		newLookupCmd(g),
		newKVCmd(g),
		newNameCmd(g),
		newExposeCmd(g),
		newStopServiceCmd(g, "unexpose NAME", "Stop exposing NAME (open tunnels run on)", "exposed", (*node.Client).Unexpose),
		newForwardCmd(g),
		newStopServiceCmd(g, "unforward NAME", "Close the local port forwarded to NAME", "forwarded", (*node.Client).Unforward),
		newServicesCmd(g),
		newSendCmd(g),
		newInboxCmd(g),
		newShareCmd(g),
		newGetCmd(g),
		newSwarmsCmd(g),
		newDashboardCmd(g),
		newDistributeCmd(g),
		newDevnetCmd(g),
		newDemoCmd(g),
		newBenchCmd(g),
		newKeygenCmd(g),
		newClusterKeyCmd(g),
	)
	return root
}

// printJSON writes v as indented JSON on stdout.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// client finds the daemon running in the selected home.
func (g *globals) client() (*node.Client, error) {
	home, err := node.ResolveHome(g.home)
	if err != nil {
		return nil, err
	}
	return node.NewClient(home)
}

package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"
)

// contention is N busy child processes that load the CPU for as long as a
// bench runs, so that figures under contention are reproducible: users'
// laptops are busy with other work. Each child is this binary's hidden
// `bench spin` verb, and on Linux dies with its parent (Pdeathsig) even if
// the bench is killed.
type contention struct{ cmds []*exec.Cmd }

// startContention starts n spinning children (none for n = 0).
func startContention(n int) (*contention, error) {
	c := &contention{}
	if n <= 0 {
		return c, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("--contend: finding this binary: %w", err)
	}
	for range n {
		cmd := exec.Command(self, "bench", "spin")
		cmd.SysProcAttr = spinProcAttr()
		if err := cmd.Start(); err != nil {
			c.stop()
			return nil, fmt.Errorf("--contend: starting a busy process: %w", err)
		}
		c.cmds = append(c.cmds, cmd)
	}
	return c, nil
}

// stop kills the children and reaps them.
func (c *contention) stop() {
	for _, cmd := range c.cmds {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	c.cmds = nil
}

// validContend checks a --contend value.
func validContend(n int) error {
	if n < 0 || n > 64 {
		return usageError{fmt.Errorf("--contend %d: want 0 to 64 busy processes", n)}
	}
	return nil
}

// newSpinCmd is the hidden child of --contend: one thread that burns CPU
// until it is killed.
func newSpinCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "spin",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			runtime.GOMAXPROCS(1)
			done := cmd.Context().Done() // SIGINT or SIGTERM ends it too
			x := uint64(1)
			for i := 0; ; i++ {
				x = x*6364136223846793005 + 1442695040888963407
				if i&(1<<20-1) == 0 {
					select {
					case <-done:
						return nil
					default:
					}
				}
				if x == 0 { // never true; keeps the loop from being optimised out
					return nil
				}
			}
		},
	}
}

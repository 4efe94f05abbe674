package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
)

func newDistributeCmd(g *globals) *cobra.Command {
	var to []string
	var count int
	var wait time.Duration
	var piece units.Size
	var attach string
	var list bool
	var originCopies float64
	cmd := &cobra.Command{
		Use:   "distribute PATH | --attach ID|last | --list",
		Short: "Share a file or directory and have other peers fetch it; exit 0 once every target holds a verified copy",
		Long: `Share PATH (as peer share does), then order each target to fetch it
through the swarm, and follow them until each holds a verified copy.

Targets: --to all (the default) is every alive member of the group but this
peer; --to also takes peer IDs and names, and may be given more than once.
--count K picks K of the targets at random.

A target carries out the order only when this peer is one of its operators
(the operators list of its config file), or, in a closed group, a member.
Others refuse, and say why. A target that lacks the disk space refuses; one
that cannot find the file's manifest within a minute fails. Ordered files
go to the target's distribute_dir (default <home>/distributed); a target
restarted half-way resumes its fetch.

While it runs, one line per target shows its progress, rate, time left and
state (ordering, fetching, done, failed, dead or refused): a table redrawn in
place on a terminal, plain lines every few seconds otherwise. A target that
stops answering is shown dead; if it comes back within --wait it finishes.
The job ends when every target is done, has failed or refused, or has been
dead longer than --wait. The report gives each target's time, their p50,
p99 and max, the bytes this peer uploaded and every failure with its
reason; --json prints it as one JSON object. The job runs in the daemon: if
this command is stopped, it goes on there: --attach ID (or last, the newest
job) follows it again, or prints the report of one that has ended, and
--list lists the jobs the daemon keeps. The daemon keeps its jobs in its
home: restarted, it shows the finished ones as they were and resumes the
others, sharing PATH again (their targets fail if PATH is gone).

This peer uploads each piece once, and a little more, up to --origin-copies
copies of the file in all (1.2 by default); the targets trade the rest
among themselves. A target that gets no new piece for 30 s lifts the
bound. With few targets the origin is a larger share of the capacity, and
--origin-copies 0 (no bound) finishes sooner at the cost of its upload.

Exit 0 only when every target holds a verified copy, else 1.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if attach != "" || list {
				if len(args) > 0 || attach != "" && list {
					return usageError{fmt.Errorf("--attach and --list take no PATH, and not each other")}
				}
				return nil
			}
			if len(args) != 1 {
				return usageError{fmt.Errorf("distribute takes one PATH (or --attach ID, or --list)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if attach != "" || list {
				c, err := g.client()
				if err != nil {
					return err
				}
				if list {
					return listJobs(cmd.Context(), c, g.json)
				}
				return attachJob(cmd.Context(), c, attach, g.json)
			}
			if wait <= 0 {
				return usageError{fmt.Errorf("--wait %s: want a positive duration", wait)}
			}
			if count < 0 {
				return usageError{fmt.Errorf("--count %d: want a positive number", count)}
			}
			if err := node.CheckOriginCopies(originCopies); err != nil {
				return usageError{fmt.Errorf("--origin-copies: %w", err)}
			}
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("distribute %s: %w", args[0], err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(os.Stderr, "hashing %s…\n", path)
			}
			job, err := c.StartDistribute(cmd.Context(), node.DistributeRequest{Path: path, To: to, Count: count,
				Wait: wait.String(), PieceLength: piece, OriginCopies: &originCopies})
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(os.Stderr, "job %s: %s (%s, %d pieces) to %d targets\n", job.ID, job.Name,
					units.FormatBytes(float64(job.Size)), job.Pieces, len(job.Targets))
			}
			return finishJob(cmd.Context(), c, job, g.json)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&to, "to", nil, "target: all, a peer ID or a name; repeatable (default all)")
	fl.IntVar(&count, "count", 0, "pick this many of the targets at random (default: every one)")
	fl.DurationVar(&wait, "wait", node.DefaultDistributeWait, "how long a dead target is waited for")
	fl.Var(&piece, "piece", "piece length, a power of two from 16KiB to 16MiB (default as peer share chooses)")
	fl.Float64Var(&originCopies, "origin-copies", node.DefaultOriginCopies, "bound this peer's upload to this many copies of the file, and let the targets trade the rest (0: no bound, fastest for a few targets)")
	fl.StringVar(&attach, "attach", "", "follow a job already running (its ID, or last), or print its report if it has ended")
	fl.BoolVar(&list, "list", false, "list the distribution jobs the daemon keeps")
	return cmd
}

// finishJob follows a job to its end, prints its report and says whether
// every target holds a verified copy.
func finishJob(ctx context.Context, c *node.Client, job node.DistributeJob, quiet bool) error {
	job, err := followJob(ctx, c, job, quiet)
	if err != nil {
		return err
	}
	if quiet {
		if err := printJSON(job); err != nil {
			return err
		}
	} else {
		printReport(os.Stdout, job)
	}
	if !job.Report.OK {
		return fmt.Errorf("%d of %d targets hold no verified copy", job.Report.Targets-job.Report.Done, job.Report.Targets)
	}
	return nil
}

// attachJob finds a job by ID, or the newest for "last", and finishes it.
func attachJob(ctx context.Context, c *node.Client, id string, quiet bool) error {
	if id == "last" {
		jobs, err := c.DistributeJobs(ctx)
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return errors.New("--attach last: this daemon has no distribution jobs")
		}
		id = jobs[len(jobs)-1].ID
	}
	job, err := c.DistributeStatus(ctx, id)
	if err != nil {
		return fmt.Errorf("--attach %s: %w", id, err)
	}
	if !quiet {
		fmt.Fprintf(os.Stderr, "job %s: %s (%s, %d pieces) to %d targets, started %s\n", job.ID, job.Name,
			units.FormatBytes(float64(job.Size)), job.Pieces, len(job.Targets), job.Started.Local().Format(time.DateTime))
	}
	return finishJob(ctx, c, job, quiet)
}

// listJobs prints the jobs the daemon keeps, oldest first.
func listJobs(ctx context.Context, c *node.Client, asJSON bool) error {
	jobs, err := c.DistributeJobs(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(jobs)
	}
	if len(jobs) == 0 {
		fmt.Println("no distribution jobs")
		return nil
	}
	for _, l := range jobLines(jobs) {
		fmt.Println(l)
	}
	return nil
}

// jobLines is one line per job: ID, name, size, targets done, state.
func jobLines(jobs []node.DistributeJob) []string {
	out := make([]string, 0, len(jobs))
	for _, j := range jobs {
		state := "running"
		switch {
		case j.Done && j.Report.OK:
			state = "done"
		case j.Done:
			state = fmt.Sprintf("ended, %d without a copy", j.Report.Targets-j.Report.Done)
		}
		out = append(out, fmt.Sprintf("%-14s %-24s %9s  %d/%d targets  %6.1f s  %s", j.ID, trim(j.Name, 24),
			units.FormatBytes(float64(j.Size)), j.Report.Done, j.Report.Targets, j.Seconds, state))
	}
	return out
}

// followJob polls a job until it ends, showing each target's line: redrawn
// in place on a terminal, printed every few seconds otherwise.
func followJob(ctx context.Context, c *node.Client, job node.DistributeJob, quiet bool) (node.DistributeJob, error) {
	tty := !quiet && term.IsTerminal(int(os.Stderr.Fd()))
	drawn := 0
	var lastPlain time.Time
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		switch {
		case tty:
			drawn = redraw(os.Stderr, drawn, targetLines(job))
		case !quiet && (job.Done || time.Since(lastPlain) >= 2*time.Second):
			lastPlain = time.Now()
			fmt.Fprintf(os.Stderr, "after %.0f s:\n", job.Seconds)
			for _, l := range targetLines(job) {
				fmt.Fprintln(os.Stderr, l)
			}
		}
		if job.Done {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return job, fmt.Errorf("stopped; job %s goes on in the daemon: %w", job.ID, ctx.Err())
		case <-tick.C:
		}
		next, err := c.DistributeStatus(ctx, job.ID)
		if err != nil {
			return job, err
		}
		job = next
	}
}

// redraw writes lines over the drawn lines written last time (ANSI cursor
// up and erase line) and returns how many it wrote.
func redraw(w io.Writer, drawn int, lines []string) int {
	var b strings.Builder
	if drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", drawn)
	}
	for _, l := range lines {
		b.WriteString("\r\x1b[2K")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for i := len(lines); i < drawn; i++ {
		b.WriteString("\r\x1b[2K\n")
	}
	_, _ = io.WriteString(w, b.String())
	return max(drawn, len(lines))
}

// targetLabel is how a target is shown: its name, else the end of its ID.
func targetLabel(t node.DistributeTarget) string {
	if t.As != "" {
		return trim(t.As, 20)
	}
	id := t.Peer
	if len(id) > 12 {
		id = "…" + id[len(id)-11:]
	}
	return id
}

// targetLines is one line per target: percent, rate, time left, state.
func targetLines(job node.DistributeJob) []string {
	out := make([]string, 0, len(job.Targets))
	for _, t := range job.Targets {
		left := "-"
		if t.ETASeconds > 0 {
			left = (time.Duration(t.ETASeconds) * time.Second).String()
		}
		state := t.State
		switch {
		case t.State == node.TargetDone:
			state = fmt.Sprintf("done in %.1f s", t.Seconds)
		case t.Reason != "" && t.State != node.TargetFetching:
			state += ": " + trim(t.Reason, 60)
		}
		out = append(out, fmt.Sprintf("%-20s %5.1f%% %11s %8s  %s", targetLabel(t), t.Percent,
			units.FormatBytes(t.Rate)+"/s", left, state))
	}
	return out
}

// printReport writes the end of a job: each target's time, the summary,
// the origin's egress and every failure.
func printReport(w io.Writer, job node.DistributeJob) {
	r := job.Report
	fmt.Fprintf(w, "distributed %s (%s) to %d of %d targets in %.1f s\n", job.Name,
		units.FormatBytes(float64(job.Size)), r.Done, r.Targets, job.Seconds)
	for _, t := range job.Targets {
		fmt.Fprintf(w, "  %-20s %-8s %7.1f s\n", targetLabel(t), t.State, t.Seconds)
	}
	if r.Done > 0 {
		fmt.Fprintf(w, "time to a verified copy: p50 %.1f s, p99 %.1f s, max %.1f s\n", r.P50, r.P99, r.Max)
	}
	fmt.Fprintf(w, "origin sent %s (%.2f× the file)\n", units.FormatBytes(float64(r.OriginSent)), r.EgressRatio)
	if len(r.Failures) > 0 {
		fmt.Fprintln(w, "failures:")
		for _, f := range r.Failures {
			fmt.Fprintf(w, "  %s: %s: %s\n", f.Peer, f.State, f.Reason)
		}
	}
}

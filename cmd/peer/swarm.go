package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

func newShareCmd(g *globals) *cobra.Command {
	var piece units.Size
	var up, down units.Rate
	cmd := &cobra.Command{
		Use:   "share PATH",
		Short: "Seed a file or directory: prints its infohash, magnet link and .torrent path",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err != nil {
				return fmt.Errorf("share %s: %w", args[0], err)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Fprintf(os.Stderr, "hashing %s…\n", path)
			}
			res, err := c.Share(cmd.Context(), node.ShareRequest{Path: path, PieceLength: piece, UploadRate: up, DownloadRate: down})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(res)
			}
			fmt.Printf("sharing %s (%s, %d pieces)\ninfohash %s\nmagnet   %s\ntorrent  %s\n",
				res.Name, units.FormatBytes(float64(res.Size)), res.Pieces, res.InfoHash, res.Magnet, res.Torrent)
			return nil
		},
	}
	cmd.Flags().Var(&piece, "piece", "piece length, a power of two from 16KiB to 16MiB (default 256KiB; 128KiB under 32MiB, halved down to 32KiB while the content would have fewer than 64 pieces)")
	cmd.Flags().Var(&up, "upload-rate", "cap this file's uploads, such as 2MiB/s")
	cmd.Flags().Var(&down, "download-rate", "cap this file's downloads")
	return cmd
}

func newGetCmd(g *globals) *cobra.Command {
	var out string
	var up, down units.Rate
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "get MAGNET|TORRENT|INFOHASH",
		Short: "Fetch a file or directory through the swarm, showing progress; exit 0 once every piece has verified",
		Long: `Fetch a file or directory through the swarm into -o DIR (default: the
current directory). The data is written to NAME.part and renamed to NAME
once every piece has verified; an existing NAME is never overwritten.
Without a .torrent file the manifest comes from peers. If no peer provides
the infohash within --wait, get gives up and says so.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait <= 0 {
				return usageError{fmt.Errorf("--wait %s: want a positive duration", wait)}
			}
			dir, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			req := node.GetRequest{Out: dir, UploadRate: up, DownloadRate: down}
			ref := args[0]
			if st, err := os.Stat(ref); err == nil && st.Mode().IsRegular() {
				if st.Size() > 2*meta.MaxInfoSize {
					return fmt.Errorf("%s is %d bytes: too large for a .torrent file", ref, st.Size())
				}
				b, err := os.ReadFile(ref)
				if err != nil {
					return err
				}
				if _, err := meta.ParseTorrent(b); err != nil {
					return fmt.Errorf("%s: %w", ref, err)
				}
				req.Torrent = b
			} else {
				if _, _, err := node.ParseRef(ref); err != nil {
					return usageError{err}
				}
				req.Ref = ref
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.StartGet(cmd.Context(), req)
			if err != nil {
				if swarm.IsNoSpaceMessage(err.Error()) {
					return fmt.Errorf("%w\nonce there is room, run the same peer get again (any pieces verified before are kept)", err)
				}
				return err
			}
			st, err = follow(cmd.Context(), c, st, wait, g.json)
			if g.json {
				if perr := printJSON(st); perr != nil {
					return perr
				}
			}
			if err != nil {
				return err
			}
			if !g.json {
				fmt.Printf("%s: %s verified in %.1f s\n", st.Path, units.FormatBytes(float64(st.Size)), st.Seconds)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", ".", "directory to put the file or directory in")
	cmd.Flags().Var(&up, "upload-rate", "cap this file's uploads, such as 2MiB/s")
	cmd.Flags().Var(&down, "download-rate", "cap this file's downloads")
	cmd.Flags().DurationVar(&wait, "wait", time.Minute, "give up if no peer provides the file within this time")
	return cmd
}

// follow polls a download until every piece has verified, showing
// progress: a bar on a terminal, a line every few seconds otherwise.
func follow(ctx context.Context, c *node.Client, st swarm.Status, wait time.Duration, quiet bool) (swarm.Status, error) {
	tty := !quiet && term.IsTerminal(int(os.Stderr.Fd()))
	var bar *progressbar.ProgressBar
	start := time.Now()
	var lastLine time.Time
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if st.Error != "" {
			if swarm.IsNoSpaceMessage(st.Error) {
				return st, fmt.Errorf("%s\n%s", st.Error, noSpaceHint(st))
			}
			return st, errors.New(st.Error)
		}
		if st.Complete {
			if bar != nil {
				_ = bar.Finish()
			}
			return st, nil
		}
		if !st.HaveInfo && st.Peers == 0 && time.Since(start) > wait {
			_ = c.RemoveSwarm(context.Background(), st.InfoHash)
			return st, fmt.Errorf("no peer provides %s (waited %s); is it shared, and is this peer in the same group?", st.InfoHash, wait)
		}
		desc := describe(st)
		switch {
		case tty && st.HaveInfo:
			if bar == nil {
				bar = progressbar.NewOptions64(st.Size, progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30),
					progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
			}
			bar.Describe(desc)
			_ = bar.Set64(int64(float64(st.Size) * float64(st.Have) / float64(max(1, st.Pieces))))
		case !quiet && time.Since(lastLine) >= 2*time.Second:
			lastLine = time.Now()
			fmt.Fprintln(os.Stderr, desc)
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("stopped; the download goes on in the daemon (peer swarms shows it): %w", ctx.Err())
		case <-tick.C:
		}
		next, err := c.SwarmStatus(ctx, st.InfoHash)
		if err != nil {
			return st, err
		}
		st = next
	}
}

// noSpaceHint tells what a download stopped by a full disk kept and how
// it goes on.
func noSpaceHint(st swarm.Status) string {
	if st.Have == 0 {
		return "nothing was fetched; once there is room, run the same peer get again"
	}
	return fmt.Sprintf("%d of %d pieces are verified and kept; once there is room, run the same peer get again: it fetches only the rest", st.Have, st.Pieces)
}

func describe(st swarm.Status) string {
	name := st.Name
	if name == "" {
		name = st.InfoHash[:8]
	}
	if !st.HaveInfo {
		return fmt.Sprintf("%s: fetching the manifest, %d peers", name, st.Peers)
	}
	pct := 100 * float64(st.Have) / float64(max(1, st.Pieces))
	eta := "?"
	if st.ETASeconds > 0 {
		eta = (time.Duration(st.ETASeconds) * time.Second).String()
	}
	return fmt.Sprintf("%s: %5.1f%% %s/s %d peers, %s left", name, pct, units.FormatBytes(st.DownRate), st.Peers, eta)
}

func newSwarmsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "swarms",
		Short: "List what this peer shares and fetches",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.Swarms(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(list)
			}
			if len(list) == 0 {
				fmt.Println("no swarms")
				return nil
			}
			for _, st := range list {
				state := "downloading"
				switch {
				case st.Error != "":
					state = "failed: " + st.Error
				case st.Complete:
					state = "seeding"
				}
				fmt.Printf("%s  %-24s %9s  %3d/%-5d pieces  %2d peers  up %s  %s\n", st.InfoHash[:12], trim(st.Name, 24),
					units.FormatBytes(float64(st.Size)), st.Have, st.Pieces, st.Peers, units.FormatBytes(float64(st.Uploaded)), state)
			}
			return nil
		},
	}
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

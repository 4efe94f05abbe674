package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/internal/units"
	"github.com/peer-overlay/peer/node"
)

// leaveTimeout bounds how long a stopping peer waits for its leave message
// to spread before it closes its connections.
const leaveTimeout = 3 * time.Second

func newInitCmd(g *globals) *cobra.Command {
	var clusterKey string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a peer home: an Ed25519 identity and a commented config file",
		Long: `Create a peer home: an Ed25519 identity and a commented config file. With
--cluster-key FILE the config names that key file (made by "peer keygen
FILE"), and the peer runs a closed group: only peers with the key join.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			home, err := node.ResolveHome(g.home)
			if err != nil {
				return err
			}
			if clusterKey != "" {
				// Checked before the home is made, so a bad file leaves nothing.
				_, warning, err := node.LoadClusterKeys(clusterKey)
				if err != nil {
					return err
				}
				if warning != "" {
					fmt.Fprintln(os.Stderr, "warning:", warning)
				}
			}
			created, err := node.InitHome(home)
			if err != nil {
				return err
			}
			if clusterKey != "" {
				if err := node.SetClusterKey(home, clusterKey); err != nil {
					return err
				}
			}
			id, err := node.PeerIDOf(home)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(map[string]any{"home": home, "id": id.String(), "created": created})
			}
			if created {
				fmt.Printf("initialized %s\npeer id %s\nconfig  %s\n", home, id, filepath.Join(home, node.ConfigFile))
			} else {
				fmt.Printf("%s is already a peer home\npeer id %s\n", home, id)
			}
			if clusterKey != "" {
				fmt.Printf("closed group: cluster key file %s\n", clusterKey)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&clusterKey, "cluster-key", "", "close the group: the cluster key file to use, made with `peer keygen FILE` (a relative path is taken from the current directory)")
	return cmd
}

type runFlags struct {
	listen    []string
	port      int
	bootstrap []string
	wan       bool
	logLevel  string
	logFormat string

	uploadRate, downloadRate units.Rate
	// uploadSet and downloadSet say the rate flags were given: only
	// those replace the config's rates.
	uploadSet, downloadSet bool

	countAsPublic      []string
	supernodeMinUptime int
	noUpgradeDials     bool
	testClaimPublic    bool
	http               string
	clusterKey         string
}

func newRunCmd(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the peer daemon in the foreground (stop it with Ctrl-C)",
		Long: `Run the peer daemon in the foreground. On first use the home is created
with a new identity. Join an existing group with --bootstrap, giving an
address as "peer id" prints it on any running peer.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			home, err := node.ResolveHome(g.home)
			if err != nil {
				return err
			}
			cfg, created, err := f.config(cmd, home)
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			if path := os.Getenv("PEER_CPUPROFILE"); path != "" {
				stop, err := startCPUProfile(path)
				if err != nil {
					return err
				}
				defer stop()
			}
			n, err := node.Start(home, cfg, log)
			if err != nil {
				if created {
					_ = os.RemoveAll(home) // a first run that failed leaves nothing behind
				}
				return err
			}
			<-cmd.Context().Done()
			// A second Ctrl-C or SIGTERM now ends the process at once.
			signal.Reset(os.Interrupt, syscall.SIGTERM)
			log.Info("stopping: leaving the group", "deadline", node.StopTimeout.String())
			if skipped := n.Close(leaveTimeout); len(skipped) > 0 {
				log.Warn("stopped at the deadline; these steps were left running", "skipped", skipped)
				return fmt.Errorf("stop hit its %s deadline; skipped: %s", node.StopTimeout, strings.Join(skipped, ", "))
			}
			log.Info("stopped")
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.listen, "listen", nil, "multiaddr to listen on, repeatable (default from the config: TCP and QUIC on port 4001)")
	fl.IntVar(&f.port, "port", -1, "port for TCP and QUIC on every listen address; 0 picks a free one")
	fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "peer to join through, as `peer id` prints it (/ip4/HOST/tcp/PORT/p2p/ID), repeatable")
	fl.BoolVar(&f.wan, "wan", false, "WAN failure-detector timing (tolerant of slow links)")
	fl.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default from the config)")
	fl.StringVar(&f.logFormat, "log-format", "", "text or json (default from the config)")
	fl.Var(&f.uploadRate, "upload-rate", "cap on swarm uploads, all files together, such as 4MiB/s; 0 is none (default from the config)")
	fl.StringArrayVar(&f.countAsPublic, "count-as-public", nil, "TEST BEDS ONLY: an address range (CIDR, such as 198.18.0.0/16) to treat as public where libp2p would not; repeatable, logged loudly")
	fl.IntVar(&f.supernodeMinUptime, "supernode-min-uptime", -1, "seconds of uptime before this peer may be elected a supernode; every member must agree (default from the config: 60)")
	fl.BoolVar(&f.noUpgradeDials, "no-upgrade-dials", false, "TEST AND DIAGNOSIS ONLY: no direct dials of our own over relayed pairs, so only DCUtR upgrades them; logged loudly")
	fl.BoolVar(&f.testClaimPublic, "test-claim-public", false, "TESTS ONLY: advertise a public, dialed-back address whatever STUN found (a lying peer, which the group must not elect); logged loudly")
	fl.StringVar(&f.http, "http", "", "HOST:PORT for metrics, the gateway and the dashboard, or off (default from the config: 127.0.0.1:0)")
	fl.StringVar(&f.clusterKey, "cluster-key", "", "cluster key file for a closed group (default from the config's cluster_key; none: an open group)")
	fl.Var(&f.downloadRate, "download-rate", "cap on swarm downloads, such as 10MiB/s; 0 is none (default from the config)")
	return cmd
}

// config prepares the home on first use, reads its config file and lays
// the flags over it. Flag mistakes are found before anything is written.
func (f *runFlags) config(cmd *cobra.Command, home string) (cfg node.Config, created bool, err error) {
	if f.port < -1 || f.port > 65535 {
		return cfg, false, usageError{fmt.Errorf("--port %d: want 0 to 65535", f.port)}
	}
	for _, b := range f.bootstrap {
		if _, err := node.ParseBootstrap(b); err != nil {
			return cfg, false, usageError{err}
		}
	}
	f.uploadSet, f.downloadSet = cmd.Flags().Changed("upload-rate"), cmd.Flags().Changed("download-rate")
	probe := node.DefaultConfig()
	if len(f.listen) > 0 {
		probe.Listen = f.listen
	}
	f.apply(&probe)
	if err := probe.Validate(); err != nil {
		return cfg, false, usageError{errors.New(strings.Replace(err.Error(), "config: ", "flag --", 1))}
	}
	if created, err = node.InitHome(home); err != nil {
		return cfg, false, err
	}
	if cfg, err = node.LoadConfig(filepath.Join(home, node.ConfigFile)); err != nil {
		return cfg, created, err
	}
	if len(f.listen) > 0 {
		cfg.Listen = f.listen
	}
	f.apply(&cfg)
	return cfg, created, cfg.Validate()
}

func (f *runFlags) apply(cfg *node.Config) {
	if f.port >= 0 {
		cfg.Listen = node.WithListenPort(cfg.Listen, f.port)
	}
	if len(f.bootstrap) > 0 {
		cfg.Bootstrap = f.bootstrap
	}
	if f.wan {
		cfg.Membership = "wan"
	}
	if f.logLevel != "" {
		cfg.LogLevel = f.logLevel
	}
	if f.logFormat != "" {
		cfg.LogFormat = f.logFormat
	}
	if f.uploadSet {
		cfg.UploadRate = f.uploadRate
	}
	if f.downloadSet {
		cfg.DownloadRate = f.downloadRate
	}
	if len(f.countAsPublic) > 0 {
		cfg.CountAsPublic = f.countAsPublic
	}
	if f.supernodeMinUptime >= 0 {
		cfg.SupernodeMinUptimeSec = f.supernodeMinUptime
	}
	if f.noUpgradeDials {
		cfg.NoUpgradeDials = true
	}
	if f.testClaimPublic {
		cfg.TestClaimPublic = true
	}
	if f.http != "" {
		cfg.HTTP = f.http
	}
	if f.clusterKey != "" {
		if abs, err := filepath.Abs(f.clusterKey); err == nil {
			cfg.ClusterKey = abs
		}
	}
}

func newLogger(cfg node.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// startCPUProfile writes a CPU profile of the daemon to path until the
// returned function is called; set PEER_CPUPROFILE to use it (%p in the
// path becomes the process ID, for many peers at once).
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid())))
	if err != nil {
		return nil, fmt.Errorf("PEER_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("PEER_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

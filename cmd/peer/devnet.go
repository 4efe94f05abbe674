package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/peer-overlay/peer/node"
)

type devnetFlags struct {
	dir       string
	basePort  int
	logLevel  string
	transport string
	// runArgs, when set, gives peer i extra flags for `peer run`.
	runArgs func(i int) []string
	// listenIP, when set, is the address peer i listens on (else
	// 127.0.0.1); wrap, when set, is the command that runs peer i (`ip
	// netns exec NAME`, say), followed by the peer's own command line.
	listenIP func(i int) string
	wrap     func(i int) []string
	// keyFile is the cluster's key file, set by startCluster: every peer
	// runs with it, so the cluster is a closed group.
	keyFile string
}

// devnet limits: a peer process takes some 30 MiB, and ports above
// basePort must exist.
const maxDevnetPeers = 512

func newDevnetCmd(g *globals) *cobra.Command {
	f := &devnetFlags{}
	cmd := &cobra.Command{
		Use:   "devnet N",
		Short: "Run N peers on 127.0.0.1 as child processes, all joined through peer-0",
		Long: `Run N peers on 127.0.0.1, each a child process with its own home D/peer-<i>,
all bootstrapped to peer-0, in a closed group: a fresh cluster key
(D/cluster.key) is given to every peer. Shows progress until every peer sees N alive
members, prints each home and address, and stays in the foreground until
Ctrl-C, which stops every peer cleanly. Without --dir the homes go in a
fresh temporary folder that is removed on exit; with --dir they are kept,
and a later devnet in the same folder reuses their identities.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > maxDevnetPeers {
				return usageError{fmt.Errorf("devnet N: %q is not a number of peers from 1 to %d", args[0], maxDevnetPeers)}
			}
			switch f.transport {
			case "both", "tcp", "quic":
			default:
				return usageError{fmt.Errorf("--transport %q: want both, tcp or quic", f.transport)}
			}
			if f.basePort != 0 && (f.basePort < 1024 || f.basePort+n-1 > 65535) {
				return usageError{fmt.Errorf("--base-port %d: ports %d to %d must lie in 1024-65535", f.basePort, f.basePort, f.basePort+n-1)}
			}
			err = runDevnet(cmd.Context(), n, f, g.json)
			if cmd.Context().Err() != nil && errors.Is(err, context.Canceled) {
				fmt.Fprintln(os.Stderr, "devnet: interrupted; peers stopped")
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&f.dir, "dir", "", "folder for the peers' homes (default: a temporary folder, removed on exit)")
	cmd.Flags().IntVar(&f.basePort, "base-port", 0, "peer i listens on port P+i (default: each picks a free port)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level of the peers (their logs go to D/peer-<i>/peer.log)")
	cmd.Flags().StringVar(&f.transport, "transport", "both", "what the peers listen on: both (TCP and QUIC), tcp or quic")
	return cmd
}

// devPeer is one child process of a devnet.
type devPeer struct {
	index  int
	home   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited closes
	id     string
	addr   string
	client *node.Client // the control API, once it answered
}

func runDevnet(ctx context.Context, n int, f *devnetFlags, asJSON bool) (err error) {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("devnet: cannot find the peer binary: %w", err)
	}
	dir := f.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "peer-devnet-"); err != nil {
			return fmt.Errorf("devnet: %w", err)
		}
		defer os.RemoveAll(dir)
	} else {
		if dir, err = filepath.Abs(dir); err != nil {
			return fmt.Errorf("devnet --dir: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("devnet --dir: %w", err)
		}
	}
	peers, ready, err := startCluster(ctx, exe, dir, n, f)
	defer stopPeers(peers)
	if err != nil {
		return err
	}
	printDevnet(peers, dir, f.keyFile, ready, asJSON, f.dir == "")
	watchPeers(ctx, peers)
	fmt.Fprintf(os.Stderr, "devnet: stopping %d peers\n", n)
	return nil
}

// startCluster starts n peers with homes in dir, all joined through
// peer-0, and waits until every one sees all n alive and answers on its
// control API. The caller stops the peers it returns, even on error.
func startCluster(ctx context.Context, exe, dir string, n int, f *devnetFlags) ([]*devPeer, time.Duration, error) {
	// One key for the cluster, beside the homes: a devnet is a closed
	// group. A kept --dir keeps its key too.
	f.keyFile = filepath.Join(dir, "cluster.key")
	if _, err := os.Stat(f.keyFile); errors.Is(err, os.ErrNotExist) {
		if err := node.WriteNewClusterKeyFile(f.keyFile); err != nil {
			return nil, 0, fmt.Errorf("devnet: %w", err)
		}
	}
	if _, _, err := node.LoadClusterKeys(f.keyFile); err != nil {
		return nil, 0, fmt.Errorf("devnet: %w", err)
	}
	peers := make([]*devPeer, n)
	for i := range peers {
		home := filepath.Join(dir, fmt.Sprintf("peer-%d", i))
		if _, err := node.InitHome(home); err != nil {
			return nil, 0, fmt.Errorf("devnet: %w", err)
		}
		peers[i] = &devPeer{index: i, home: home, log: filepath.Join(home, "peer.log"), exited: make(chan struct{})}
	}
	start := time.Now()
	if err := peers[0].start(exe, f, ""); err != nil {
		return peers, 0, err
	}
	boot, err := peers[0].waitReady(ctx)
	if err != nil {
		return peers, 0, err
	}
	for _, p := range peers[1:] {
		if err := p.start(exe, f, boot); err != nil {
			return peers, 0, err
		}
	}
	if err := waitConverged(ctx, peers); err != nil {
		return peers, 0, err
	}
	ready := time.Since(start)
	for _, p := range peers {
		if p.addr == "" {
			if _, err := p.waitReady(ctx); err != nil {
				return peers, 0, err
			}
		}
		if p.client == nil {
			c, err := node.NewClient(p.home)
			if err != nil {
				return peers, 0, err
			}
			p.client = c
		}
	}
	return peers, ready, nil
}

func (p *devPeer) start(exe string, f *devnetFlags, boot string) error {
	port := 0
	if f.basePort != 0 {
		port = f.basePort + p.index
	}
	ip := "127.0.0.1"
	if f.listenIP != nil {
		ip = f.listenIP(p.index)
	}
	args := []string{"run", "--home", p.home, "--log-level", f.logLevel}
	if f.transport != "quic" {
		args = append(args, "--listen", fmt.Sprintf("/ip4/%s/tcp/%d", ip, port))
	}
	if f.transport != "tcp" {
		args = append(args, "--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, port))
	}
	if boot != "" {
		args = append(args, "--bootstrap", boot)
	}
	if f.keyFile != "" {
		args = append(args, "--cluster-key", f.keyFile)
	}
	if f.runArgs != nil {
		args = append(args, f.runArgs(p.index)...)
	}
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("devnet: peer-%d log: %w", p.index, err)
	}
	defer logf.Close() // the child holds its own copy
	cmd := exec.Command(exe, args...)
	if f.wrap != nil {
		w := f.wrap(p.index)
		cmd = exec.Command(w[0], append(append(w[1:len(w):len(w)], exe), args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = peerProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devnet: start peer-%d: %w", p.index, err)
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// waitReady polls the peer's control API until it answers, and returns its
// TCP address for others to bootstrap from: TCP is what peers dial first,
// so joining over it adds no second connection.
func (p *devPeer) waitReady(ctx context.Context) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := node.NewClient(p.home); err == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := c.ID(cctx)
			cancel()
			if err == nil && len(info.Addrs) > 0 {
				p.id = info.ID
				p.addr = info.Addrs[0]
				for _, a := range info.Addrs {
					if strings.Contains(a, "/tcp/") {
						p.addr = a
						break
					}
				}
				return p.addr, nil
			}
		}
		select {
		case <-p.exited:
			return "", p.failure()
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("devnet: peer-%d did not answer within 30s; see %s", p.index, p.log)
		}
	}
}

// failure describes how a peer exited, with the end of its log.
func (p *devPeer) failure() error {
	tail := ""
	if b, err := os.ReadFile(p.log); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		tail = "\n  " + strings.Join(lines, "\n  ")
	}
	return fmt.Errorf("devnet: peer-%d exited (%v); log %s:%s", p.index, p.err, p.log, tail)
}

// waitConverged shows progress until every peer sees all n as alive.
func waitConverged(ctx context.Context, peers []*devPeer) error {
	n := len(peers)
	bar := newProgress(fmt.Sprintf("devnet: peers that see %d alive members", n), n)
	defer bar.done()
	done := make([]bool, n)
	for {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i, p := range peers {
			if done[i] {
				continue
			}
			select {
			case <-p.exited:
				return p.failure()
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				done[i] = p.seesAlive(ctx, n)
			}()
		}
		wg.Wait()
		count := 0
		for _, d := range done {
			if d {
				count++
			}
		}
		bar.set(count)
		if count == n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *devPeer) seesAlive(ctx context.Context, n int) bool {
	if p.client == nil {
		c, err := node.NewClient(p.home)
		if err != nil {
			return false
		}
		p.client = c
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ms, err := p.client.Members(cctx)
	if err != nil {
		return false
	}
	alive := 0
	for _, m := range ms.Members {
		if m.State == "alive" {
			alive++
		}
	}
	return alive >= n
}

type devnetPeerJSON struct {
	Name string `json:"name"`
	Home string `json:"home"`
	ID   string `json:"id"`
	Addr string `json:"addr"`
	PID  int    `json:"pid"`
}

func printDevnet(peers []*devPeer, dir, keyFile string, ready time.Duration, asJSON, temporary bool) {
	if asJSON {
		out := struct {
			Dir          string           `json:"dir"`
			ClusterKey   string           `json:"cluster_key"`
			ReadySeconds float64          `json:"ready_seconds"`
			Peers        []devnetPeerJSON `json:"peers"`
		}{Dir: dir, ClusterKey: keyFile, ReadySeconds: ready.Seconds()}
		for _, p := range peers {
			out.Peers = append(out.Peers, devnetPeerJSON{fmt.Sprintf("peer-%d", p.index), p.home, p.id, p.addr, p.cmd.Process.Pid})
		}
		_ = printJSON(out)
		return
	}
	fmt.Printf("devnet: %d peers up; each sees %d alive members after %.2fs\n", len(peers), len(peers), ready.Seconds())
	for _, p := range peers {
		fmt.Printf("  peer-%-3d %s  %s\n", p.index, p.home, p.addr)
	}
	where := dir
	if temporary {
		where += " (removed on exit)"
	}
	fmt.Printf("homes in %s; logs in each home's peer.log\n", where)
	fmt.Printf("closed group: cluster key %s (a peer joins with `peer run --cluster-key %s`)\n", keyFile, keyFile)
	fmt.Printf("try: peer --home %s members\n", peers[0].home)
	fmt.Println("Ctrl-C stops every peer.")
}

// watchPeers reports each peer that dies until ctx ends.
func watchPeers(ctx context.Context, peers []*devPeer) {
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-p.exited:
				if ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, p.failure())
				}
			case <-ctx.Done():
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
}

// stopPeers sends SIGTERM to every running peer, waits for them to leave
// the group, and kills any that take longer than the grace period.
func stopPeers(peers []*devPeer) {
	const grace = 10 * time.Second
	var wg sync.WaitGroup
	for _, p := range peers {
		if p == nil || p.cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-p.exited:
				return
			default:
			}
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(grace):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}()
	}
	wg.Wait()
}

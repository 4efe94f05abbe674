package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/peer-overlay/peer/internal/testwait"
	"github.com/peer-overlay/peer/node"
)

// Time limits of the harness. They are generous because the tests run many
// processes on small CI machines; a healthy peer needs a fraction of each.
const (
	readyTimeout = 30 * time.Second // for a started peer's control API to answer
	stopTimeout  = 15 * time.Second // for a peer to exit after SIGTERM
	killTimeout  = 10 * time.Second // for the kernel to reap a peer after SIGKILL
	rpcTimeout   = 2 * time.Second  // for one control API call
	pollInterval = 250 * time.Millisecond
	logTailLines = 40
)

// peerBin is the peer binary TestMain builds for the whole run.
var peerBin string

// TestMain builds the peer binary once, so each test starts real daemons
// without paying for a build, and removes it after the run.
func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests is TestMain's body, kept apart so its deferred removal of the
// build folder runs before os.Exit.
func runTests(m *testing.M) int {
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: the go tool is not on PATH: %v\n", err)
		return 1
	}
	root, err := moduleRoot(goTool)
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "peer-integration-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	peerBin = filepath.Join(dir, "peer")
	build := exec.Command(goTool, "build", "-o", peerBin, "github.com/peer-overlay/peer/cmd/peer")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: go build of cmd/peer in %s failed: %v\n%s", root, err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot finds the folder holding go.mod: upward from the working
// folder (the package's own folder under go test), else from `go env GOMOD`.
func moduleRoot(goTool string) (string, error) {
	if dir, err := os.Getwd(); err == nil {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	out, err := exec.Command(goTool, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the module root: no go.mod above the working folder and go env GOMOD names none")
	}
	return filepath.Dir(gomod), nil
}

// permanentError marks a condition that waiting cannot fix, such as a peer
// that crashed, so Eventually fails at once instead of at its deadline.
type permanentError struct{ err error }

func (e permanentError) Error() string   { return e.err.Error() }
func (e permanentError) Unwrap() error   { return e.err }
func (e permanentError) Permanent() bool { return true }

// Eventually is testwait.Every: poll cond every interval until it returns
// nil, failing the test at timeout, or at once on a permanentError.
func Eventually(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	testwait.Every(t, timeout, interval, cond)
}

// Holds checks cond every interval for d, failing the test the first
// time it returns an error: a state that must last, not one to wait for.
func Holds(t testing.TB, d, interval time.Duration, cond func() error) {
	t.Helper()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for end := time.Now().Add(d); ; {
		if err := cond(); err != nil {
			t.Fatal(err)
		}
		if !time.Now().Before(end) {
			return
		}
		<-tick.C
	}
}

// pingUntilAnswered pings to from from's daemon every interval until an
// answer comes, failing the test after timeout.
func pingUntilAnswered(t testing.TB, from *Peer, to string, timeout, interval time.Duration) {
	t.Helper()
	id, err := peer.Decode(to)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := from.api()
	if err != nil {
		t.Fatal(err)
	}
	Eventually(t, timeout, interval, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := cl.Ping(ctx, id, 2*time.Second)
		return err
	})
}

// Peer is one daemon of a Cluster, run as a child process.
type Peer struct {
	Name    string // peer-<index>, as the logs and messages call it
	Home    string
	LogPath string // the daemon's stdout and stderr, across restarts
	ID      string // its peer ID, as its control API last gave it
	Addr    string // its TCP address ending in /p2p/<ID>
	Port    int    // its TCP and QUIC port; a restart reuses it

	t    *testing.T
	boot string // the bootstrap address it was started with, "" for none
	// netns, when set, is the network namespace the daemon runs in, and
	// ip the address it listens on there (default 127.0.0.1).
	netns, ip string
	// extra are more flags for `peer run`.
	extra []string

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // cmd.Wait's result, set before done closes
	// stopped is set while the test has stopped or killed the peer on
	// purpose; a peer that exits without it has crashed.
	stopped bool
	client  *node.Client
}

// Cluster is a group of peers on 127.0.0.1, all joined through peer-0.
type Cluster struct {
	t     *testing.T
	Peers []*Peer
}

// NewCluster starts n peers, each with its own home under t.TempDir():
// peer-0 first, then, once its control API answers, the others with peer-0
// as their bootstrap. It returns when every control API answers, not when
// the group has converged. Every process is killed when the test ends.
func NewCluster(t *testing.T, n int) *Cluster {
	t.Helper()
	return newCluster(t, n, nil)
}

// newCluster is NewCluster with place, when not nil, called on each peer
// before it starts (to put it in a network namespace, say).
func newCluster(t *testing.T, n int, place func(i int, p *Peer)) *Cluster {
	t.Helper()
	// TempDir registers its removal now, so the cleanup below, registered
	// later, runs first: the peers must be gone before their homes are.
	base := t.TempDir()
	c := &Cluster{t: t}
	for i := range n {
		home := filepath.Join(base, fmt.Sprintf("peer-%d", i))
		c.Peers = append(c.Peers, &Peer{
			Name:    fmt.Sprintf("peer-%d", i),
			Home:    home,
			LogPath: filepath.Join(home, "peer.log"),
			t:       t,
		})
		if place != nil {
			place(i, c.Peers[i])
		}
	}
	t.Cleanup(c.cleanup)

	first := c.Peers[0]
	if err := first.start(0); err != nil {
		t.Fatal(err)
	}
	if err := first.waitReady(); err != nil {
		t.Fatal(err)
	}
	for _, p := range c.Peers[1:] {
		p.boot = first.Addr
		if err := p.start(0); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range c.Peers[1:] {
		if err := p.waitReady(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// cleanup kills whatever still runs and, when the test failed, shows the
// end of every peer's log, which is where a daemon's side of a failure is.
func (c *Cluster) cleanup() {
	for _, p := range c.Peers {
		if p.running() {
			_ = p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(killTimeout):
				c.t.Logf("%s (pid %d) still runs %v after SIGKILL", p.Name, p.cmd.Process.Pid, killTimeout)
			}
		}
	}
	if dir := os.Getenv("PEER_KEEP_LOGS"); dir != "" {
		c.keepLogs(filepath.Join(dir, strings.ReplaceAll(c.t.Name(), "/", "_")))
	}
	if !c.t.Failed() {
		return
	}
	for _, p := range c.Peers {
		c.t.Logf("last lines of %s's log %s:\n%s", p.Name, p.LogPath, logTail(p.LogPath, logTailLines))
	}
}

// keepLogs copies every peer's log into dir, for PEER_KEEP_LOGS: a
// passing run's logs are gone with its homes otherwise.
func (c *Cluster) keepLogs(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Logf("PEER_KEEP_LOGS: %v", err)
		return
	}
	for _, p := range c.Peers {
		b, err := os.ReadFile(p.LogPath)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, p.Name+".log"), b, 0o644)
		}
		if err != nil {
			c.t.Logf("PEER_KEEP_LOGS: %s: %v", p.Name, err)
		}
	}
	c.t.Logf("PEER_KEEP_LOGS: the peers' logs are in %s", dir)
}

// Expect returns a condition for Eventually: every peer the test has not
// stopped answers, and lists exactly the cluster's peers, each in the
// state states gives for it, or "alive" for those it does not name;
// "gone" takes "left" or "dead".
func (c *Cluster) Expect(states map[*Peer]string) func() error {
	return func() error {
		names := make(map[string]string, len(c.Peers)) // peer ID -> Name
		for _, p := range c.Peers {
			names[p.ID] = p.Name
		}
		for _, obs := range c.Peers {
			if obs.stopped {
				continue
			}
			ms, err := obs.Members()
			if err != nil {
				return err
			}
			got := make(map[string]string, len(ms.Members))
			for _, m := range ms.Members {
				if _, known := names[m.ID]; !known {
					return fmt.Errorf("%s lists %s (%s), which is no peer of the cluster", obs.Name, m.ID, m.State)
				}
				if m.Self && m.ID != obs.ID {
					return fmt.Errorf("%s marks %s as itself, but its ID is %s", obs.Name, names[m.ID], obs.ID)
				}
				got[m.ID] = m.State
			}
			for _, p := range c.Peers {
				want := "alive"
				if s, ok := states[p]; ok {
					want = s
				}
				state, ok := got[p.ID]
				switch {
				case !ok:
					return fmt.Errorf("%s lists %d members and not %s; want %d", obs.Name, len(got), p.Name, len(c.Peers))
				case want == "gone":
					if state != "left" && state != "dead" {
						return fmt.Errorf("%s sees %s as %q, want it gone (left or dead)", obs.Name, p.Name, state)
					}
				case state != want:
					return fmt.Errorf("%s sees %s as %q, want %q", obs.Name, p.Name, state, want)
				}
			}
		}
		return nil
	}
}

// start runs the daemon in the peer's home on port (0: a free one), with
// the peer's bootstrap address if it has one.
func (p *Peer) start(port int) error {
	ip := p.ip
	if ip == "" {
		ip = "127.0.0.1"
	}
	args := []string{"run", "--home", p.Home, "--log-level", "info",
		"--listen", fmt.Sprintf("/ip4/%s/tcp/%d", ip, port),
		"--listen", fmt.Sprintf("/ip4/%s/udp/%d/quic-v1", ip, port),
	}
	if p.boot != "" {
		args = append(args, "--bootstrap", p.boot)
	}
	args = append(args, p.extra...)
	// The log lives in the home, and the daemon refuses to make a home of
	// a folder that holds anything else, so the home is made first, as
	// devnet does. It is a no-op on a restart.
	if _, err := node.InitHome(p.Home); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	logf, err := os.OpenFile(p.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", p.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	// A marker between runs makes a restart visible in the log tail.
	fmt.Fprintf(logf, "=== integration: %s starting at %s: peer %s ===\n",
		p.Name, time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(peerBin, args...)
	if p.netns != "" {
		// ip netns exec execs the daemon, so the process is the daemon.
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, peerBin}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so a terminal's Ctrl-C on `go test` does not hit
	// the peers before the harness kills them; Pdeathsig kills them should
	// the test binary die without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %s: %w", p.Name, peerBin, err)
	}
	p.cmd, p.done, p.waitErr, p.stopped, p.client = cmd, make(chan struct{}), nil, false, nil
	done := p.done
	go func() {
		p.waitErr = cmd.Wait()
		close(done)
	}()
	return nil
}

// running reports whether the process started last is still alive.
func (p *Peer) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exitedError describes a peer that exited while it should run; it is
// permanent, as no amount of waiting brings the process back.
func (p *Peer) exitedError() error {
	return permanentError{fmt.Errorf("%s exited unexpectedly (%v); log %s ends:\n%s",
		p.Name, p.waitErr, p.LogPath, logTail(p.LogPath, 10))}
}

// waitReady polls the control API until it answers with at least one TCP
// address, and records the peer's ID, address and port.
func (p *Peer) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if !p.running() {
			return p.exitedError()
		}
		// A fresh client each try: a killed predecessor leaves a stale
		// control.json behind until the new daemon rewrites it.
		p.client = nil
		info, err := p.IDInfo()
		if err == nil {
			err = p.record(info)
			if err == nil {
				return nil
			}
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: control API did not answer within %v: %v", p.Name, readyTimeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// record takes the peer's ID, TCP address and port from its ID answer.
func (p *Peer) record(info node.IDInfo) error {
	if info.ID == "" {
		return fmt.Errorf("%s: ID answer has no id", p.Name)
	}
	suffix := "/p2p/" + info.ID
	for _, a := range info.Addrs {
		if !strings.HasSuffix(a, suffix) {
			continue
		}
		port, ok := tcpPort(a)
		if !ok {
			continue
		}
		p.ID, p.Addr, p.Port = info.ID, a, port
		return nil
	}
	return fmt.Errorf("%s: no TCP address ending in %s among %q", p.Name, suffix, info.Addrs)
}

// tcpPort reads the port of the /tcp/ component of a multiaddr string.
func tcpPort(addr string) (int, bool) {
	parts := strings.Split(addr, "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "tcp" {
			port, err := strconv.Atoi(parts[i+1])
			return port, err == nil && port > 0
		}
	}
	return 0, false
}

// api returns a control API client for the running daemon.
func (p *Peer) api() (*node.Client, error) {
	if !p.running() {
		if p.stopped {
			return nil, fmt.Errorf("%s was stopped by the test", p.Name)
		}
		return nil, p.exitedError()
	}
	if p.client == nil {
		c, err := node.NewClient(p.Home)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		p.client = c
	}
	return p.client, nil
}

// IDInfo asks the daemon for its ID and addresses.
func (p *Peer) IDInfo() (node.IDInfo, error) {
	c, err := p.api()
	if err != nil {
		return node.IDInfo{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	info, err := c.ID(ctx)
	if err != nil {
		p.client = nil // re-read control.json next time
		return info, fmt.Errorf("%s: id: %w", p.Name, err)
	}
	return info, nil
}

// Members asks the daemon for the group as it sees it.
func (p *Peer) Members() (node.MembersInfo, error) {
	c, err := p.api()
	if err != nil {
		return node.MembersInfo{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	ms, err := c.Members(ctx)
	if err != nil {
		p.client = nil
		return ms, fmt.Errorf("%s: members: %w", p.Name, err)
	}
	return ms, nil
}

// Connections is the number of open connections the peer's status lists,
// all transports together.
func (p *Peer) Connections() (int, error) {
	c, err := p.api()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		p.client = nil
		return 0, fmt.Errorf("%s: status: %w", p.Name, err)
	}
	n := 0
	for _, k := range st.Connections {
		n += k
	}
	return n, nil
}

// Kill9 kills the daemon with SIGKILL, as a crash or power loss would, and
// waits until it is reaped.
func (p *Peer) Kill9() {
	p.t.Helper()
	if !p.running() {
		p.t.Fatalf("kill -9 %s: it is not running (%v)", p.Name, p.waitErr)
	}
	p.stopped = true
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(killTimeout):
		p.t.Fatalf("kill -9 %s: still running after %v", p.Name, killTimeout)
	}
}

// Stop sends SIGTERM, on which the daemon leaves the group and exits 0,
// and fails the test unless it does so within stopTimeout. It returns how
// long the exit took.
func (p *Peer) Stop() time.Duration {
	p.t.Helper()
	if !p.running() {
		p.t.Fatalf("stop %s: it is not running (%v)", p.Name, p.waitErr)
	}
	p.stopped = true
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("stop %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.t.Fatalf("stop %s: still running %v after SIGTERM", p.Name, stopTimeout)
	}
	took := time.Since(start)
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Fatalf("stop %s: exited with code %d (%v) after SIGTERM, want 0", p.Name, code, p.waitErr)
	}
	return took
}

// Restart starts a stopped or killed peer again with the same home, port
// and bootstrap address, and waits for its control API. Reusing the port
// matters: the group refuses a peer ID at a new address for a while.
func (p *Peer) Restart() {
	p.t.Helper()
	if p.running() {
		p.t.Fatalf("restart %s: it is still running", p.Name)
	}
	port := p.Port
	if err := p.start(port); err != nil {
		p.t.Fatal(err)
	}
	if err := p.waitReady(); err != nil {
		p.t.Fatalf("restart %s: %v", p.Name, err)
	}
	if p.Port != port {
		p.t.Fatalf("restart %s: listens on port %d, want the old port %d", p.Name, p.Port, port)
	}
}

// logTail returns the last n lines of the file at path, or why it cannot.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// runPeer runs the peer binary with args to completion, bounded at 20s so a
// hang fails the test rather than blocking it, and returns its exit code
// and output.
func runPeer(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peerBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("peer %s: still running after 20s; killed\nstderr: %s", strings.Join(args, " "), errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("peer %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

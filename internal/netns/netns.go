//go:build linux

// Package netns builds a small network-namespace testbed for integration
// tests: one router namespace and N host namespaces, each host joined to the
// router by its own veth pair and addressed from 198.18.0.0/15 (the
// benchmarking range, RFC 2544), so no traffic ever leaves the machine.
//
// Host i (0-based) has address 198.18.<i+1>.2/24 on its interface eth0 and a
// default route via the router, which owns 198.18.<i+1>.1/24 on its
// interface h<i> and forwards between hosts. Links can be cut and healed
// (iptables in the router) and rate-capped (tbf on both ends of a host's
// link).
//
// Building a testbed needs root, iproute2 (ip, tc) and iptables; see
// [Available].
//
// # NAT sites
//
// A testbed built with [NewWithNATs] has, besides its public hosts, NAT
// sites. Site k (0-based) is a NAT router namespace plus inside host
// namespaces behind it:
//
//   - The NAT router joins the core router the way a public host does: its
//     interface wan has the public address 198.18.<p+k+1>.2/24, where p is
//     the number of public hosts, and a default route via the core router,
//     which owns 198.18.<p+k+1>.1/24 on its interface n<k>.
//   - Its LAN is a bridge, lan, holding 198.19.<k+1>.1/24. Inside host j of
//     the site has 198.19.<k+1>.<j+2>/24 on its eth0, plugged into the
//     bridge, and a default route via 198.19.<k+1>.1. Inside hosts of one
//     site reach each other directly over the bridge.
//   - The core router has no route to 198.19.0.0/16, so an inside host is
//     reachable from outside its site only through its NAT's mappings.
//
// The NAT router source-NATs everything leaving wan to its public address:
// [Easy] with plain MASQUERADE (endpoint-independent mapping, the source
// port kept when it is free), [Hard] with MASQUERADE --random-fully
// (endpoint-dependent mapping: a fresh random port for every new
// destination). Either kind filters inbound traffic by conntrack 5-tuple:
// from wan only packets of connections an inside host opened (conntrack
// state ESTABLISHED or RELATED) are forwarded; everything else arriving on
// wan, including packets addressed to the NAT router itself, is dropped.
// Dropping unsolicited packets in INPUT, rather than letting the router
// answer them, keeps them from creating conntrack entries that would take
// a mapping's public port away from a later outbound flow.
//
// The NAT router's UDP conntrack timeouts (nf_conntrack_udp_timeout and
// nf_conntrack_udp_timeout_stream, for unreplied and replied flows) are
// both set to [SiteSpec.UDPTimeout], 30 s by default: a UDP mapping lives
// that long after the last packet in either direction.
// [Testbed.FlushConntrack] forgets every mapping of a site at once.
//
// [Testbed.Hosts], [Testbed.Command], [Testbed.Do], Cut, Heal and SetRate
// deal with public hosts only; [Testbed.Sites] lists the sites, and
// [Testbed.CommandIn] and [Testbed.DoIn] run code in any namespace of the
// testbed by name.
package netns

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 keeps named network namespaces.
const netnsDir = "/run/netns"

// MaxHosts is the largest number of hosts a testbed can have.
const MaxHosts = 200

// Host is one host namespace of a testbed.
type Host struct {
	Name string     // network namespace name, as listed by `ip netns list`
	Addr netip.Addr // the host's address, 198.18.<i+1>.2
}

// Testbed is a router namespace plus host namespaces. Create one with [New]
// and release it with [Testbed.Close].
type Testbed struct {
	router string
	hosts  []Host
	sites  []Site // NAT sites, see [NewWithNATs]

	mu     sync.Mutex // serialises Cut, Heal, SetRate and Close
	closed bool
}

// New creates the router and n hosts (1 ≤ n ≤ [MaxHosts]). Namespace names
// start with up to four alphanumeric characters of prefix, followed by a
// per-run tag, so concurrent testbeds do not collide. On any error New
// deletes whatever it created.
func New(prefix string, n int) (*Testbed, error) {
	if n < 1 || n > MaxHosts {
		return nil, fmt.Errorf("netns: host count %d out of range [1, %d]", n, MaxHosts)
	}
	tag, err := runTag(prefix)
	if err != nil {
		return nil, err
	}
	tb := &Testbed{router: tag + "r"}
	for i := range n {
		tb.hosts = append(tb.hosts, Host{
			Name: fmt.Sprintf("%sh%d", tag, i),
			Addr: netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 2}),
		})
	}
	if err := tb.build(); err != nil {
		return nil, errors.Join(err, tb.Close())
	}
	return tb, nil
}

// runTag returns a name stem unique to this run: at most four characters of
// prefix, the low bits of the pid and random hex, 11 characters at most, so
// that every namespace name stays within 15 characters.
func runTag(prefix string) (string, error) {
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, prefix)
	if len(clean) > 4 {
		clean = clean[:4]
	}
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("netns: random tag: %w", err)
	}
	return fmt.Sprintf("%s%03x%s", clean, os.Getpid()&0xfff, hex.EncodeToString(b[:])), nil
}

// build creates and wires up all namespaces. Veth pairs are created directly
// inside their namespaces, so no interface ever appears in the root
// namespace and deleting the namespaces deletes every veth.
func (tb *Testbed) build() error {
	var add, router []string
	add = append(add, "netns add "+tb.router)
	router = append(router, "link set lo up")
	for i, h := range tb.hosts {
		add = append(add, "netns add "+h.Name)
		router = append(router,
			fmt.Sprintf("link add h%d type veth peer name eth0 netns %s", i, h.Name),
			fmt.Sprintf("addr add 198.18.%d.1/24 dev h%d", i+1, i),
			fmt.Sprintf("link set h%d up", i))
	}
	if err := ipBatch("", add); err != nil {
		return err
	}
	if err := ipBatch(tb.router, router); err != nil {
		return err
	}
	for i, h := range tb.hosts {
		err := ipBatch(h.Name, []string{
			"link set lo up",
			fmt.Sprintf("addr add %s/24 dev eth0", h.Addr),
			"link set eth0 up",
			fmt.Sprintf("route add default via 198.18.%d.1", i+1),
		})
		if err != nil {
			return err
		}
	}
	return inNetns(tb.router, func() error {
		// /proc/sys/net shows the sysctls of the calling thread's netns.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0); err != nil {
			return fmt.Errorf("netns: enable ip_forward in %s: %w", tb.router, err)
		}
		return nil
	})
}

// Hosts returns the testbed's hosts; index i is host i.
func (tb *Testbed) Hosts() []Host {
	return append([]Host(nil), tb.hosts...)
}

// Close deletes every namespace of the testbed (and with them every veth).
// It keeps going when a deletion fails and returns all failures joined.
// Calling Close again does nothing and returns nil.
//
// A namespace that still has open sockets (created with [Testbed.Do])
// disappears from `ip netns list` at once but lives on in the kernel until
// they are closed.
func (tb *Testbed) Close() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.closed {
		return nil
	}
	tb.closed = true
	var errs []error
	for _, name := range append([]string{tb.router}, tb.names()...) {
		errs = append(errs, deleteNetns(name))
	}
	return errors.Join(errs...)
}

func (tb *Testbed) names() []string {
	var names []string
	for _, h := range tb.hosts {
		names = append(names, h.Name)
	}
	return append(names, tb.siteNames()...)
}

// deleteNetns does what `ip netns delete` does: detach the bind mount that
// keeps the namespace alive and remove its file. A namespace that does not
// exist (for instance because New failed before creating it) is no error.
func deleteNetns(name string) error {
	path := filepath.Join(netnsDir, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
		return fmt.Errorf("netns: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("netns: delete namespace %s: %w", name, err)
	}
	return nil
}

// check validates host indices and that the testbed is open. tb.mu must be
// held.
func (tb *Testbed) check(idx ...int) error {
	if tb.closed {
		return errors.New("netns: testbed is closed")
	}
	if len(idx) == 2 && idx[0] == idx[1] {
		return fmt.Errorf("netns: cannot cut host %d from itself", idx[0])
	}
	for _, i := range idx {
		if i < 0 || i >= len(tb.hosts) {
			return fmt.Errorf("netns: host %d out of range [0, %d)", i, len(tb.hosts))
		}
	}
	return nil
}

// Cut drops all IPv4 traffic forwarded between host i and host j, in both
// directions, including packets of established connections. Cutting an
// already cut pair does nothing.
func (tb *Testbed) Cut(i, j int) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.check(i, j); err != nil {
		return err
	}
	for _, rule := range cutRules(i, j) {
		ok, err := tb.hasRule(rule)
		if err == nil && !ok {
			err = tb.iptables(append([]string{"-I"}, rule...)...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Heal undoes [Testbed.Cut](i, j). Healing a pair that is not cut does
// nothing.
func (tb *Testbed) Heal(i, j int) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.check(i, j); err != nil {
		return err
	}
	for _, rule := range cutRules(i, j) {
		for {
			ok, err := tb.hasRule(rule)
			if err == nil && ok {
				err = tb.iptables(append([]string{"-D"}, rule...)...)
			}
			if err != nil {
				return err
			}
			if !ok {
				break
			}
		}
	}
	return nil
}

// cutRules returns the FORWARD rules (without the -I/-D/-C verb) that cut
// the link between hosts i and j.
func cutRules(i, j int) [][]string {
	rule := func(in, out int) []string {
		return []string{"FORWARD", "-i", fmt.Sprintf("h%d", in), "-o", fmt.Sprintf("h%d", out), "-j", "DROP"}
	}
	return [][]string{rule(i, j), rule(j, i)}
}

// hasRule reports whether rule exists in the router (iptables -C exits 1
// when it does not).
func (tb *Testbed) hasRule(rule []string) (bool, error) {
	err := tb.iptables(append([]string{"-C"}, rule...)...)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		return false, nil
	}
	return err == nil, err
}

func (tb *Testbed) iptables(args ...string) error {
	return run(exec.Command("ip", append([]string{"netns", "exec", tb.router, "iptables", "-w"}, args...)...), nil)
}

// SetRate caps host i's link at bitsPerSecond in both directions, with a
// token bucket filter on the egress of the host's eth0 (upload) and of the
// router's interface toward it (download). A rate of 0 removes the cap.
func (tb *Testbed) SetRate(i int, bitsPerSecond int64) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if err := tb.check(i); err != nil {
		return err
	}
	if bitsPerSecond < 0 {
		return fmt.Errorf("netns: negative rate %d", bitsPerSecond)
	}
	ends := []struct{ ns, dev string }{{tb.hosts[i].Name, "eth0"}, {tb.router, fmt.Sprintf("h%d", i)}}
	for _, e := range ends {
		var err error
		if bitsPerSecond > 0 {
			// The bucket holds 10 ms of traffic but at least a few
			// full-size frames; packets wait at most 50 ms for tokens.
			burst := max(bitsPerSecond/8/100, 16*1024)
			err = run(exec.Command("tc", "-n", e.ns, "qdisc", "replace", "dev", e.dev, "root", "tbf",
				"rate", fmt.Sprintf("%dbit", bitsPerSecond), "burst", fmt.Sprint(burst), "latency", "50ms"), nil)
		} else {
			err = removeTBF(e.ns, e.dev)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// removeTBF deletes the root tbf qdisc of dev, if there is one.
func removeTBF(ns, dev string) error {
	var out bytes.Buffer
	show := exec.Command("tc", "-n", ns, "qdisc", "show", "dev", dev, "root")
	show.Stdout = &out
	if err := run(show, nil); err != nil {
		return err
	}
	if !strings.Contains(out.String(), "qdisc tbf ") {
		return nil
	}
	return run(exec.Command("tc", "-n", ns, "qdisc", "del", "dev", dev, "root"), nil)
}

// Command returns a command that runs name with args inside host i's
// namespace (`ip netns exec NAME name args...`). For a bad index the
// command fails to start.
func (tb *Testbed) Command(i int, name string, args ...string) *exec.Cmd {
	if i < 0 || i >= len(tb.hosts) {
		cmd := exec.Command(name, args...)
		cmd.Err = fmt.Errorf("netns: host %d out of range [0, %d)", i, len(tb.hosts))
		return cmd
	}
	return exec.Command("ip", append([]string{"netns", "exec", tb.hosts[i].Name, name}, args...)...)
}

// Do runs fn on an OS thread switched into host i's namespace and returns
// its error. Sockets fn creates belong to that namespace for their whole
// life, so they can be used from any goroutine after Do returns. fn must not
// rely on goroutines it starts running in the namespace.
func (tb *Testbed) Do(i int, fn func() error) error {
	if i < 0 || i >= len(tb.hosts) {
		return fmt.Errorf("netns: host %d out of range [0, %d)", i, len(tb.hosts))
	}
	return inNetns(tb.hosts[i].Name, fn)
}

// inNetns runs fn on a fresh goroutine whose OS thread is locked and
// switched into the named namespace, then switched back. If switching back
// fails the thread stays locked, so the runtime discards it when the
// goroutine exits instead of reusing it in the wrong namespace. A panic in
// fn is re-raised in the caller.
func inNetns(name string, fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		var res result
		defer func() { done <- res }()
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: open current namespace: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, name))
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: open namespace %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: enter namespace %s: %w", name, err)
			return
		}
		defer func() {
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				res.err = errors.Join(res.err, fmt.Errorf("netns: leave namespace %s: %w", name, err))
				return // thread stays locked and dies with the goroutine
			}
			runtime.UnlockOSThread()
		}()
		defer func() { res.panic = recover() }()
		res.err = fn()
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// ipBatch runs `ip [-n ns] -batch -` with one command per line.
func ipBatch(ns string, lines []string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	return run(exec.Command("ip", args...), []byte(strings.Join(lines, "\n")+"\n"))
}

// run runs cmd with stdin and returns an error naming the command and
// carrying its output if it fails. The error wraps *exec.ExitError when the
// command ran and exited non-zero.
func run(cmd *exec.Cmd, stdin []byte) error {
	var out bytes.Buffer
	if cmd.Stdout == nil {
		cmd.Stdout = &out
	}
	cmd.Stderr = &out
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if stdin != nil {
			lines := strings.Split(strings.TrimSpace(string(stdin)), "\n")
			if len(lines) > 8 {
				lines = append(lines[:8], fmt.Sprintf("... (%d lines in all)", len(lines)))
			}
			msg = "input:\n" + strings.Join(lines, "\n") + "\noutput:\n" + msg
		}
		return fmt.Errorf("netns: %s: %w: %s", strings.Join(cmd.Args, " "), err, msg)
	}
	return nil
}

// Available reports whether this process can build a testbed: it must run
// as root (or at least be able to create network namespaces) and find ip,
// tc and iptables in PATH. The error lists everything that is missing.
func Available() error {
	var errs []error
	if uid := os.Geteuid(); uid != 0 {
		errs = append(errs, fmt.Errorf("netns: not running as root (euid %d)", uid))
	}
	for _, tool := range []string{"ip", "tc", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			errs = append(errs, fmt.Errorf("netns: %s not found in PATH (install iproute2 and iptables)", tool))
		}
	}
	if err := probeNetns(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// probeNetns checks that this process may create and enter a network
// namespace, by unsharing one on a locked thread and switching back.
func probeNetns() error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns: no network namespace support: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns: cannot create a network namespace: %w", err)
			return
		}
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("netns: cannot return to the original namespace: %w", err)
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	return <-done
}

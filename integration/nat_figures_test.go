//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/swarm"
)

// The NAT traversal figures. They take minutes, so they run only when
// asked for with -nat.figures; each prints its measurements as lines
// "FIGURE name: value (details)" and fails only on wrong results, never on
// slow ones (the machines are shared and noisy).
var (
	natFigures = flag.Bool("nat.figures", false,
		"run the NAT traversal figure tests (TestNATFigure*), which print FIGURE lines and take minutes")
	natRuns = flag.Int("nat.runs", 20,
		"number of fresh test beds TestNATFigureMapping classifies")
	natIdle = flag.Duration("nat.idle", 5*time.Minute,
		"how long TestNATFigureIdleBindings leaves its peers idle behind 30 s UDP timeouts")
	natSteady = flag.Duration("nat.steady", 3*time.Minute,
		"how long TestNATFigureSTUNOverhead lets its test bed run before it reads the overhead")
	natElect = flag.Duration("nat.elect", 3*time.Minute,
		"how long TestNATFigureElection samples every peer's supernode set")
	natLateRuns = flag.Int("nat.late-runs", 10,
		"number of fresh test beds TestNATFigureLateJoiner runs")
)

// needFigures skips the test unless -nat.figures is given: an opt-in for
// long measurements, not a hidden failure.
func needFigures(t *testing.T, what string) {
	t.Helper()
	if !*natFigures {
		t.Skip("run with -nat.figures: " + what)
	}
	if err := netns.Available(); err != nil {
		t.Skipf("SKIPPING: the NAT test bed needs root, ip and iptables: %v", err)
	}
}

// figure prints one measurement in the form the figures are collected in.
func figure(t *testing.T, name, value, details string) {
	t.Helper()
	t.Logf("FIGURE %s: %s (%s)", name, value, details)
}

// quantile is the nearest-rank q-quantile of xs (NaN for none).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// spread is the median, 95th percentile and maximum of xs.
func spread(xs []float64) string {
	return fmt.Sprintf("median %.4f / p95 %.4f / max %.4f", median(xs), quantile(xs, 0.95), quantile(xs, 1))
}

// median is the middle of xs, the mean of the two middle ones for an even
// count (NaN for none).
func median(xs []float64) float64 {
	n := len(xs)
	if n == 0 || n%2 == 1 {
		return quantile(xs, 0.5)
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return (s[n/2-1] + s[n/2]) / 2
}

// mappingRight says why nc is not what a peer at place must see, or nil.
func mappingRight(nc node.NetcheckInfo, place natPlace) error {
	if nc.Mapping != place.kind {
		return fmt.Errorf("mapping %s, want %s", nc.Mapping, place.kind)
	}
	if place.kind == "hard" {
		return nil
	}
	ap, err := netip.ParseAddrPort(nc.MappedAddr)
	if err != nil || ap.Addr() != place.public {
		return fmt.Errorf("mapped to %q, want %s", nc.MappedAddr, place.public)
	}
	if !nc.PortPreserved {
		return fmt.Errorf("port not preserved at %s", nc.MappedAddr)
	}
	return nil
}

// Figure 1: how often, and how fast, fresh daemons classify their mapping
// right: -nat.runs fresh test beds of 3 public hosts, an easy and a hard
// NAT site, every peer started afresh.
func TestNATFigureMapping(t *testing.T) {
	needFigures(t, "classifies the mapping of fresh daemons on -nat.runs fresh NAT test beds")
	const deadline = 30 * time.Second
	kinds := []string{"public", "easy", "hard"}
	after := map[string][]float64{} // netcheck classified_after_s, right verdicts only
	wall := map[string][]float64{}  // control API up to the right netcheck answer
	correct, total := map[string]int{}, map[string]int{}
	var mu sync.Mutex
	began := time.Now()
	for r := range *natRuns {
		t.Run(fmt.Sprintf("run%02d", r), func(t *testing.T) {
			_, c, places := natCluster(t, 3, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Hard, Inside: 1}})
			ready := time.Now()
			n := len(c.Peers)
			first := make([]string, n) // the first verdict other than unknown
			done := make([]bool, n)
			last := make([]string, n)
			for left := n; left > 0 && time.Since(ready) < deadline; {
				for i, p := range c.Peers {
					if done[i] {
						continue
					}
					nc, err := netcheckOf(p)
					if err != nil {
						last[i] = err.Error()
						if errors.As(err, new(permanentError)) {
							t.Fatal(err)
						}
						continue
					}
					if first[i] == "" && nc.Mapping != "unknown" {
						first[i] = nc.Mapping
					}
					if err := mappingRight(nc, places[i]); err != nil {
						last[i] = err.Error()
						continue
					}
					done[i], left = true, left-1
					mu.Lock()
					if first[i] == places[i].kind {
						correct[places[i].kind]++
						after[places[i].kind] = append(after[places[i].kind], nc.ClassifiedAfterSec)
						wall[places[i].kind] = append(wall[places[i].kind], time.Since(ready).Seconds())
					}
					mu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
			mu.Lock()
			for i := range c.Peers {
				total[places[i].kind]++
			}
			mu.Unlock()
			for i, p := range c.Peers {
				switch {
				case !done[i]:
					t.Errorf("%s (%s): not classified right within %v: %s", p.Name, places[i].kind, deadline, last[i])
				case first[i] != places[i].kind:
					t.Errorf("%s (%s): first verdict %s, right only later", p.Name, places[i].kind, first[i])
				}
			}
		})
	}
	details := fmt.Sprintf("%d fresh test beds of 3 public + 1 easy + 1 hard peer, %.0f s in all; right = first verdict and mapped address right within %v",
		*natRuns, time.Since(began).Seconds(), deadline)
	for _, k := range kinds {
		figure(t, "mapping_correct_"+k, fmt.Sprintf("%d/%d = %.3f", correct[k], total[k], float64(correct[k])/float64(max(total[k], 1))), details)
	}
	for _, k := range kinds {
		figure(t, "classified_after_s_"+k, spread(after[k]),
			fmt.Sprintf("n=%d; netcheck classified_after_s: first STUN answer to first verdict", len(after[k])))
	}
	for _, k := range kinds {
		figure(t, "classified_wall_s_"+k, spread(wall[k]),
			fmt.Sprintf("n=%d; control API up to netcheck showing the right mapping, polled every 100 ms", len(wall[k])))
	}
}

// cpuSeconds is a process's user plus system CPU time.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command (which may hold spaces) start at
	// state, field 3; utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const userHZ = 100 // /proc reports clock ticks of USER_HZ, 100 on Linux
	return (ut + st) / userHZ, nil
}

// ethBytes is eth0's received and sent bytes in namespace ns.
func ethBytes(tb *netns.Testbed, ns string) (rx, tx int64, err error) {
	out, err := tb.CommandIn(ns, "cat", "/proc/net/dev").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/net/dev in %s: %w", ns, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != "eth0" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			break
		}
		r, err1 := strconv.ParseInt(f[0], 10, 64)
		s, err2 := strconv.ParseInt(f[8], 10, 64)
		return r, s, errors.Join(err1, err2)
	}
	return 0, 0, fmt.Errorf("no eth0 in /proc/net/dev of %s", ns)
}

// pathBetween is how from reaches to, by from's netcheck.
func pathBetween(from, to *Peer) string {
	nc, err := netcheckOf(from)
	if err != nil {
		return "? (" + err.Error() + ")"
	}
	for _, pr := range nc.Peers {
		if pr.ID == to.ID {
			if pr.Via != "" {
				return pr.Path + " via " + pr.Via
			}
			return pr.Path
		}
	}
	return "not listed"
}

// transfer is one bulk transfer's measurements.
type transfer struct {
	size       int64
	wall       float64 // get start to complete, as the test saw it
	firstByte  float64 // get start to the first downloaded byte
	daemonSecs float64 // the receiving swarm's own seconds
	pathDuring string  // the receiver's path to the sender while bytes flowed
	pathAfter  string
	senderPath string            // the sender's path to the receiver after
	cpu        map[*Peer]float64 // CPU seconds each public peer spent
	rx, tx     map[*Peer]int64   // eth0 bytes of each public peer
}

func (x transfer) mibps() float64 { return float64(x.size) / (1 << 20) / x.wall }
func (x transfer) mibpsFromFirstByte() float64 {
	return float64(x.size) / (1 << 20) / (x.wall - x.firstByte)
}

// bulkTransfer shares a sample file of size bytes on from and fetches it
// on to through the swarm, and measures it, with the CPU and eth0 bytes of
// the peers in watch (public ones: their namespace is their host's).
func bulkTransfer(t *testing.T, tb *netns.Testbed, from, to *Peer, watch []*Peer, size int64, seed uint64) transfer {
	t.Helper()
	src := filepath.Join(t.TempDir(), fmt.Sprintf("bulk-%d.bin", seed))
	sum, err := swarm.WriteSample(src, size, seed)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	fc, err := from.api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := fc.Share(ctx, node.ShareRequest{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	x := transfer{size: size, cpu: map[*Peer]float64{}, rx: map[*Peer]int64{}, tx: map[*Peer]int64{}}
	// count adds sign times each watched peer's CPU seconds and eth0
	// bytes: -1 before the transfer, +1 after, leaves what it cost.
	count := func(sign int) {
		for _, p := range watch {
			c, err := cpuSeconds(p.cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			rx, tx, err := ethBytes(tb, p.netns)
			if err != nil {
				t.Fatal(err)
			}
			x.cpu[p] += float64(sign) * c
			x.rx[p] += int64(sign) * rx
			x.tx[p] += int64(sign) * tx
		}
	}
	count(-1)
	tc, err := to.api()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := tc.StartGet(ctx, node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(to.Home, "downloads")}); err != nil {
		t.Fatal(err)
	}
	var st swarm.Status
	Eventually(t, 5*time.Minute, 50*time.Millisecond, func() error {
		st, err = tc.SwarmStatus(ctx, sh.InfoHash)
		if err != nil {
			return err
		}
		if st.Error != "" {
			return permanentError{errorString(to.Name + ": " + st.Error)}
		}
		if st.Downloaded > 0 && x.firstByte == 0 {
			x.firstByte = time.Since(start).Seconds()
			x.pathDuring = pathBetween(to, from)
		}
		if !st.Complete {
			return errorString(to.Name + ": " + describeStatus(st))
		}
		return nil
	})
	x.wall = time.Since(start).Seconds()
	x.daemonSecs = st.Seconds
	count(+1)
	x.pathAfter, x.senderPath = pathBetween(to, from), pathBetween(from, to)
	got, err := swarm.FileSHA1(st.Path)
	if err != nil || got != sum {
		t.Fatalf("%s: %s differs from the original (%v)", to.Name, st.Path, err)
	}
	// Stop seeding, so the next transfer has the links to itself.
	_ = fc.RemoveSwarm(ctx, sh.InfoHash)
	_ = tc.RemoveSwarm(ctx, sh.InfoHash)
	return x
}

// Figure 2: bulk throughput over a direct path and through a supernode's
// circuit, every public host's link capped at 100 Mbit/s, and the relaying
// supernode's CPU per GiB.
func TestNATFigureRelayThroughput(t *testing.T) {
	needFigures(t, "measures direct and relayed swarm throughput on 100 Mbit/s links")
	tb, c, places := natCluster(t, 3, []netns.SiteSpec{{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1}})
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	var public, hard []*Peer
	for i, p := range c.Peers {
		if places[i].kind == "public" {
			public = append(public, p)
		} else {
			hard = append(hard, p)
		}
	}
	Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		for _, p := range hard {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if nc.Mapping != "hard" || len(nc.Reservations) < 2 {
				return fmt.Errorf("%s: mapping %s, %d reservations", p.Name, nc.Mapping, len(nc.Reservations))
			}
		}
		return nil
	})
	const rate = 100e6
	for i := range tb.Hosts() {
		if err := tb.SetRate(i, rate); err != nil {
			t.Fatal(err)
		}
	}
	const size = 32 << 20
	byID := map[string]*Peer{}
	for _, p := range c.Peers {
		byID[p.ID] = p
	}
	name := func(id string) string {
		if p := byID[id]; p != nil {
			return p.Name
		}
		return id
	}
	hardNC := map[*Peer]node.NetcheckInfo{}
	for _, p := range hard {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		hardNC[p] = nc
	}
	var resv []string
	for _, p := range hard {
		var rs []string
		for _, id := range reservationsOf(hardNC[p]) {
			rs = append(rs, name(id))
		}
		resv = append(resv, fmt.Sprintf("%s on %s", p.Name, strings.Join(rs, ",")))
	}

	direct := bulkTransfer(t, tb, public[1], public[2], public, size, 1)
	relayed := bulkTransfer(t, tb, hard[0], hard[1], public, size, 2)

	traffic := func(x transfer) string {
		var parts []string
		for _, p := range public {
			parts = append(parts, fmt.Sprintf("%s rx %.1f/tx %.1f MiB cpu %.2f s", p.Name,
				float64(x.rx[p])/(1<<20), float64(x.tx[p])/(1<<20), x.cpu[p]))
		}
		return strings.Join(parts, "; ")
	}
	pathName := func(path string) string {
		if head, id, ok := strings.Cut(path, " via "); ok {
			return head + " via " + name(id)
		}
		return path
	}
	figure(t, "throughput_direct_MiB_per_s", fmt.Sprintf("%.2f", direct.mibps()),
		fmt.Sprintf("32 MiB swarm get, public %s -> public %s, tbf 100 Mbit/s on every public host; get start to complete %.2f s, first byte at %.2f s, %.2f MiB/s from the first byte; daemon's %.2f s; path %s; %s",
			public[1].Name, public[2].Name, direct.wall, direct.firstByte, direct.mibpsFromFirstByte(), direct.daemonSecs, pathName(direct.pathAfter), traffic(direct)))
	figure(t, "throughput_relayed_MiB_per_s", fmt.Sprintf("%.2f", relayed.mibps()),
		fmt.Sprintf("32 MiB swarm get, hard %s -> hard %s; get start to complete %.2f s, first byte at %.2f s, %.2f MiB/s from the first byte; daemon's %.2f s; receiver's path while bytes flowed %s, after %s; sender's path %s; reservations %s; %s",
			hard[0].Name, hard[1].Name, relayed.wall, relayed.firstByte, relayed.mibpsFromFirstByte(), relayed.daemonSecs,
			pathName(relayed.pathDuring), pathName(relayed.pathAfter), pathName(relayed.senderPath), strings.Join(resv, "; "), traffic(relayed)))
	figure(t, "throughput_ratio_relayed_over_direct", fmt.Sprintf("%.3f", relayed.mibps()/direct.mibps()),
		fmt.Sprintf("from the first byte: %.3f", relayed.mibpsFromFirstByte()/direct.mibpsFromFirstByte()))

	// The relay is the public host that carried the bytes, by its eth0
	// counters (in and out, each at least the payload); the receiver's
	// netcheck path is reported beside it, and a disagreement noted.
	var carrier *Peer
	for _, p := range public {
		if carrier == nil || min(relayed.rx[p], relayed.tx[p]) > min(relayed.rx[carrier], relayed.tx[carrier]) {
			carrier = p
		}
	}
	path, via, _ := strings.Cut(relayed.pathDuring, " via ")
	named := byID[via]
	if path == "direct" || path == "hole-punched" {
		t.Errorf("two hard-NAT peers reached each other %s: the test bed cannot allow that", path)
	}
	if min(relayed.rx[carrier], relayed.tx[carrier]) < size {
		t.Errorf("no public host forwarded the %d bytes (most: %s, rx %d, tx %d); path %q",
			size, carrier.Name, relayed.rx[carrier], relayed.tx[carrier], relayed.pathDuring)
	}
	agreement := "the receiver's and sender's netcheck name it too"
	if named != carrier || !strings.HasSuffix(relayed.senderPath, " via "+carrier.ID) {
		agreement = fmt.Sprintf("MISMATCH: the bytes went through %s but netcheck says receiver %q, sender %q",
			carrier.Name, pathName(relayed.pathDuring), pathName(relayed.senderPath))
		t.Logf("NOTE: %s", agreement)
	}
	gib := float64(size) / (1 << 30)
	var idleCPU []float64 // the public peers that relayed nothing, as a baseline
	for _, p := range public {
		if p != carrier {
			idleCPU = append(idleCPU, relayed.cpu[p])
		}
	}
	base := median(idleCPU)
	figure(t, "relay_cpu_s_per_GiB", fmt.Sprintf("%.2f", relayed.cpu[carrier]/gib),
		fmt.Sprintf("%s (pid %d), the public host whose eth0 carried the circuit (rx %.1f MiB, tx %.1f MiB), spent %.2f CPU-s while relaying 32 MiB of payload in %.2f s; less the idle public peers' median %.2f CPU-s: %.2f CPU-s per GiB; %s; all public peers: %s",
			carrier.Name, carrier.cmd.Process.Pid, float64(relayed.rx[carrier])/(1<<20), float64(relayed.tx[carrier])/(1<<20),
			relayed.cpu[carrier], relayed.wall, base, (relayed.cpu[carrier]-base)/gib, agreement, traffic(relayed)))
	if path != "relayed" {
		t.Logf("NOTE: the hard-to-hard transfer's path was %q, not relayed", relayed.pathDuring)
	}
}

// udpFlow is the test bed control of TestNATFigureIdleBindings: a UDP flow
// from an inside host to a public host, answered at once and then again
// after wait.
type udpFlow struct {
	site             int
	wait             time.Duration
	mapped           string
	first, afterWait bool
	err              error
}

// probeUDPMapping opens a mapping from inside host ns (address in) to a
// fresh socket on public host 0, checks an answer gets back through it,
// leaves it unused for wait, and checks whether a second answer does.
func probeUDPMapping(tb *netns.Testbed, ns string, in netip.Addr, wait time.Duration) (mapped string, first, afterWait bool, err error) {
	host := tb.Hosts()[0]
	var srv, cli *net.UDPConn
	if err := tb.Do(0, func() (err error) {
		srv, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host.Addr, 0)))
		return err
	}); err != nil {
		return "", false, false, err
	}
	defer srv.Close()
	if err := tb.DoIn(ns, func() (err error) {
		cli, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(in, 0)))
		return err
	}); err != nil {
		return "", false, false, err
	}
	defer cli.Close()
	if _, err := cli.WriteTo([]byte("open"), srv.LocalAddr()); err != nil {
		return "", false, false, err
	}
	buf := make([]byte, 64)
	_ = srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, from, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil {
		return "", false, false, fmt.Errorf("the public host got nothing from %s: %w", ns, err)
	}
	got := func(msg string) bool {
		if _, err := srv.WriteToUDPAddrPort([]byte(msg), from); err != nil {
			return false
		}
		_ = cli.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _, err := cli.ReadFrom(buf)
		return err == nil && string(buf[:n]) == msg
	}
	first = got("answer")
	time.Sleep(wait)
	return from.String(), first, got("late"), nil
}

// Figure 3: with 30 s UDP timeouts at the NATs, NATed peers keep their
// bindings over -nat.idle of idleness: they still hold their reservations
// and a public peer's ping reaches them at once. The control proves the
// test bed: a bare UDP mapping left unused for 35 s is gone, while one
// unused for 20 s is not.
func TestNATFigureIdleBindings(t *testing.T) {
	needFigures(t, "leaves NATed peers idle for -nat.idle behind 30 s UDP timeouts")
	tb, c, places := natCluster(t, 2, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Hard, Inside: 1}})
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	var natted []*Peer
	for i, p := range c.Peers {
		if places[i].kind != "public" {
			natted = append(natted, p)
		}
	}
	before := map[*Peer][]string{}
	Eventually(t, 60*time.Second, 200*time.Millisecond, func() error {
		for i, p := range c.Peers {
			nc, err := netcheckOf(p)
			if err != nil {
				return err
			}
			if err := mappingRight(nc, places[i]); err != nil {
				return fmt.Errorf("%s: %v", p.Name, err)
			}
			if places[i].kind != "public" {
				if len(nc.Reservations) < 2 {
					return fmt.Errorf("%s holds %d reservations", p.Name, len(nc.Reservations))
				}
				before[p] = reservationsOf(nc)
			}
		}
		return nil
	})
	public := peersOfKind(c, places, "public")
	// ping is one attempt, no retry, from a public peer to p.
	ping := func(from, p *Peer) (string, error) {
		id, err := peer.Decode(p.ID)
		if err != nil {
			return "", err
		}
		cl, err := from.api()
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
		defer cancel()
		r, err := cl.Ping(ctx, id, 5*time.Second)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%.1f ms %s", r.RTTms, r.Path()), nil
	}
	for _, from := range public {
		for _, p := range natted {
			Eventually(t, 30*time.Second, 200*time.Millisecond, func() error { _, err := ping(from, p); return err })
		}
	}

	// The control runs while the peers idle: its datagrams are a few bytes.
	var flows []*udpFlow
	var wg sync.WaitGroup
	for k, s := range tb.Sites() {
		for _, wait := range []time.Duration{20 * time.Second, 35 * time.Second} {
			f := &udpFlow{site: k, wait: wait}
			flows = append(flows, f)
			wg.Go(func() {
				f.mapped, f.first, f.afterWait, f.err = probeUDPMapping(tb, s.Inside[0].Name, s.Inside[0].Addr, wait)
			})
		}
	}
	idleStart := time.Now()
	time.Sleep(*natIdle)
	wg.Wait()
	idle := time.Since(idleStart)

	var parts []string
	ok := true
	for _, p := range natted {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		now := reservationsOf(nc)
		var pings []string
		for _, from := range public {
			res, err := ping(from, p)
			if err != nil {
				res = "FAILED: " + err.Error()
				ok = false
				t.Errorf("a ping from %s to %s (%s) after %v idle: %v", from.Name, p.Name, nc.Mapping, idle.Round(time.Second), err)
			}
			pings = append(pings, "from "+from.Name+" "+res)
		}
		if len(now) < 2 {
			ok = false
			t.Errorf("%s (%s) holds %d reservations after %v idle", p.Name, nc.Mapping, len(now), idle.Round(time.Second))
		}
		parts = append(parts, fmt.Sprintf("%s %s: %d reservations (same as before: %v), ping %s",
			p.Name, nc.Mapping, len(now), slices.Equal(now, before[p]), strings.Join(pings, ", ")))
	}
	outcome := "kept"
	if !ok {
		outcome = "LOST"
	}
	figure(t, "bindings_after_idle", outcome, fmt.Sprintf("%v idle, UDP timeout 30 s at each NAT, one ping attempt from each public peer (5 s timeout): %s",
		idle.Round(time.Second), strings.Join(parts, "; ")))

	parts = parts[:0]
	ok = true
	for _, f := range flows {
		site := tb.Sites()[f.site]
		if f.err != nil {
			t.Errorf("control on site %d (%s): %v", f.site, site.Kind, f.err)
			ok = false
			continue
		}
		wantLate := f.wait < site.UDPTimeout
		if !f.first || f.afterWait != wantLate {
			ok = false
			t.Errorf("control on site %d (%s): answer at once %v, after %v unused %v (want %v)", f.site, site.Kind, f.first, f.wait, f.afterWait, wantLate)
		}
		parts = append(parts, fmt.Sprintf("%s site, mapping %s: answer at once %v, after %v unused %v", site.Kind, f.mapped, f.first, f.wait, f.afterWait))
	}
	outcome = "mappings expire as configured"
	if !ok {
		outcome = "UNEXPECTED"
	}
	figure(t, "control_udp_mapping_expiry", outcome, "bare UDP socket inside each site to public host 0, UDP timeout 30 s: "+strings.Join(parts, "; "))
}

// Figure 4: STUN's steady cost per peer, and all idle traffic, on a bed of
// 2 public, 2 easy and 2 hard peers after -nat.steady.
func TestNATFigureSTUNOverhead(t *testing.T) {
	needFigures(t, "runs a 6-peer NAT test bed for -nat.steady and reads its STUN overhead")
	tb, c, places := natCluster(t, 2, []netns.SiteSpec{
		{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1},
		{Kind: netns.Hard, Inside: 1}, {Kind: netns.Hard, Inside: 1},
	})
	start := time.Now()
	Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
	window := min(60*time.Second, *natSteady)
	time.Sleep(time.Until(start.Add(*natSteady - window)))
	type counters struct{ rx, tx int64 }
	read := func() []counters {
		out := make([]counters, len(c.Peers))
		for i, p := range c.Peers {
			rx, tx, err := ethBytes(tb, p.netns)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = counters{rx, tx}
		}
		return out
	}
	b0, t0 := read(), time.Now()
	time.Sleep(time.Until(start.Add(*natSteady)))
	b1, secs := read(), time.Since(t0).Seconds()
	var stun, all []float64
	var stunParts, allParts []string
	for i, p := range c.Peers {
		nc, err := netcheckOf(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := mappingRight(nc, places[i]); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		stun = append(stun, nc.OverheadBps)
		stunParts = append(stunParts, fmt.Sprintf("%s %s %s %.1f", p.Name, places[i].kind, nc.Role, nc.OverheadBps))
		bps := float64(b1[i].rx-b0[i].rx+b1[i].tx-b0[i].tx) / secs
		all = append(all, bps)
		allParts = append(allParts, fmt.Sprintf("%s %s %.0f (rx %.0f, tx %.0f)", p.Name, places[i].kind, bps,
			float64(b1[i].rx-b0[i].rx)/secs, float64(b1[i].tx-b0[i].tx)/secs))
	}
	figure(t, "stun_overhead_bytes_per_s", fmt.Sprintf("median %.1f", median(stun)),
		fmt.Sprintf("netcheck stun_overhead_bytes_per_s after %v (sent + received, last 2 min): %s", time.Since(start).Round(time.Second), strings.Join(stunParts, "; ")))
	figure(t, "all_idle_traffic_bytes_per_s", fmt.Sprintf("median %.0f", median(all)),
		fmt.Sprintf("eth0 rx+tx of each peer's namespace over the last %.0f s idle: STUN, QUIC keepalives, gossip, probes: %s", secs, strings.Join(allParts, "; ")))
}

// Figure 5: how stable the supernode election is on 4 public and 2 NATed
// peers: every peer's set sampled every 2 s for -nat.elect.
func TestNATFigureElection(t *testing.T) {
	needFigures(t, "samples the supernode sets of a 6-peer NAT test bed for -nat.elect")
	_, c, places := natCluster(t, 4, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Hard, Inside: 1}})
	start := time.Now()
	kindOf := map[string]string{}
	nameOf := map[string]string{}
	for i, p := range c.Peers {
		kindOf[p.ID], nameOf[p.ID] = places[i].kind, p.Name
	}
	sample := func() ([]string, error) {
		out := make([]string, len(c.Peers))
		for i, p := range c.Peers {
			nc, err := netcheckOf(p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.Name, err)
			}
			var ids []string
			for _, s := range nc.Supernodes {
				ids = append(ids, s.ID)
			}
			slices.Sort(ids)
			out[i] = strings.Join(ids, ",")
		}
		return out, nil
	}
	agree := func(s []string) bool {
		return s[0] != "" && !slices.ContainsFunc(s, func(x string) bool { return x != s[0] })
	}
	// Fast polling until the first agreement, for its time.
	var prev []string
	var agreedAt time.Duration
	Eventually(t, 2*time.Minute, 100*time.Millisecond, func() error {
		s, err := sample()
		if err != nil {
			return err
		}
		if !agree(s) {
			return fmt.Errorf("the peers do not agree: %q", s)
		}
		prev, agreedAt = s, time.Since(start)
		return nil
	})
	firstSet := prev[0]
	changes := make([]int, len(c.Peers))
	samples, disagreeing := 0, 0
	var lastChange time.Duration
	sets := map[string]int{firstSet: 1}
	var disagreements []string
	for next := time.Now().Add(2 * time.Second); time.Since(start) < *natElect; next = next.Add(2 * time.Second) {
		time.Sleep(time.Until(next))
		s, err := sample()
		if err != nil {
			t.Fatal(err)
		}
		samples++
		for i := range s {
			if s[i] != prev[i] {
				changes[i]++
				lastChange = time.Since(start)
			}
			sets[s[i]]++
		}
		if !agree(s) {
			disagreeing++
			if len(disagreements) < 5 {
				disagreements = append(disagreements, fmt.Sprintf("at %.0f s: %q", time.Since(start).Seconds(), s))
			}
		}
		prev = s
	}
	names := func(set string) string {
		var out []string
		for _, id := range strings.Split(set, ",") {
			out = append(out, nameOf[id]+"/"+kindOf[id])
		}
		return strings.Join(out, ",")
	}
	for set := range sets {
		for _, id := range strings.Split(set, ",") {
			if id != "" && kindOf[id] != "public" {
				t.Errorf("a %s peer was seen elected: %s", kindOf[id], names(set))
			}
		}
	}
	var perPeer []string
	for i, p := range c.Peers {
		perPeer = append(perPeer, fmt.Sprintf("%s %s %d", p.Name, places[i].kind, changes[i]))
	}
	var seen []string
	for set, n := range sets {
		seen = append(seen, fmt.Sprintf("{%s} x%d", names(set), n))
	}
	slices.Sort(seen)
	figure(t, "election_time_to_agreement_s", fmt.Sprintf("%.2f", agreedAt.Seconds()),
		fmt.Sprintf("from every control API answering to all 6 peers showing the same non-empty set {%s}, polled every 100 ms", names(firstSet)))
	figure(t, "election_set_changes_after_agreement", fmt.Sprintf("total %d, max per peer %d", sumInts(changes), slices.Max(changes)),
		fmt.Sprintf("%d samples every 2 s up to %v after start; per peer: %s; last change at %.0f s; sets seen (peer-samples): %s",
			samples, *natElect, strings.Join(perPeer, ", "), lastChange.Seconds(), strings.Join(seen, " ")))
	allAgree := "yes"
	if disagreeing > 0 {
		allAgree = "no"
	}
	figure(t, "election_all_agree_every_sample", allAgree,
		fmt.Sprintf("%d of %d samples after the first agreement disagreed; final set {%s}; first disagreements: %s",
			disagreeing, samples, names(prev[0]), strings.Join(disagreements, "; ")))
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// A peer behind an easy NAT joins an established group (relays elected,
// reservations held, both NATs' mappings flushed) and must reach the other
// easy-NAT peer directly. Over -nat.late-runs fresh test beds: how often
// the pair is direct within 30 s, how long that took from the restart, and
// how long each end took from its first circuit to its first direct
// connection. It fails only if no run goes direct.
func TestNATFigureLateJoiner(t *testing.T) {
	needFigures(t, "a late easy-NAT joiner goes direct")
	var took, upgrades []float64
	direct := 0
	for run := range *natLateRuns {
		ok, d, ups := lateJoinerRun(t)
		if ok {
			direct++
			took = append(took, d.Seconds())
			upgrades = append(upgrades, ups...)
		}
		t.Logf("run %d: direct %v after %.1f s, relayed-to-direct %v", run+1, ok, d.Seconds(), ups)
	}
	figure(t, "late_joiner_direct_within_30s", fmt.Sprintf("%d/%d", direct, *natLateRuns), "3 public, 2 easy; the late one restarted after both NATs were flushed")
	figure(t, "late_joiner_time_to_direct_s", fmt.Sprintf("median %.2f / p95 %.2f", quantile(took, 0.5), quantile(took, 0.95)), "from the restart, direct runs only")
	figure(t, "late_joiner_relayed_to_direct_s", fmt.Sprintf("median %.2f / p95 %.2f / max %.2f", quantile(upgrades, 0.5), quantile(upgrades, 0.95), quantile(upgrades, 1)), "each end, 0 when its first connection was direct")
	if direct == 0 {
		t.Fatal("no run went direct")
	}
}

// lateJoinerRun is one run of TestNATFigureLateJoiner.
func lateJoinerRun(t *testing.T) (ok bool, took time.Duration, upgrades []float64) {
	var res struct {
		ok   bool
		took time.Duration
		ups  []float64
	}
	t.Run("bed", func(t *testing.T) {
		tb, c, places := natCluster(t, 3, []netns.SiteSpec{{Kind: netns.Easy, Inside: 1}, {Kind: netns.Easy, Inside: 1}})
		Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(nil))
		easy := peersOfKind(c, places, "easy")
		early, late := easy[0], easy[1]
		Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
			nc, err := netcheckOf(early)
			if err != nil {
				return err
			}
			if len(nc.Reservations) < 2 {
				return fmt.Errorf("%s holds %d reservations", early.Name, len(nc.Reservations))
			}
			return nil
		})
		late.Stop()
		for k := range tb.Sites() {
			if err := tb.FlushConntrack(k); err != nil {
				t.Fatal(err)
			}
		}
		// Out of the group before it comes back: a peer behind the other
		// NAT may have taken it for failed before its leave reached it,
		// which is not what this figure measures.
		Eventually(t, 30*time.Second, 200*time.Millisecond, c.Expect(map[*Peer]string{late: "gone"}))
		restarted := time.Now()
		late.Restart()
		pathOf := func(from, to *Peer) (node.PeerReach, bool) {
			nc, err := netcheckOf(from)
			if err != nil {
				return node.PeerReach{}, false
			}
			for _, pr := range nc.Peers {
				if pr.ID == to.ID {
					return pr, true
				}
			}
			return node.PeerReach{}, false
		}
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			a, okA := pathOf(early, late)
			b, okB := pathOf(late, early)
			isDirect := func(pr node.PeerReach) bool { return pr.Path == "direct" || pr.Path == "hole-punched" }
			if okA && okB && isDirect(a) && isDirect(b) {
				res.ok, res.took, res.ups = true, time.Since(restarted), []float64{a.UpgradeSec, b.UpgradeSec}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		res.took = time.Since(restarted)
		// Not direct: the two ends' logs say what they tried.
		for _, p := range []*Peer{early, late} {
			t.Logf("%s's log:\n%s", p.Name, logTail(p.LogPath, 40))
		}
	})
	return res.ok, res.took, res.ups
}

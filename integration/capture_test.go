package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/peer-overlay/peer/internal/netns"
	"github.com/peer-overlay/peer/node"
)

// captureRun is the length of plaintext run that must not appear on the
// wire.
const captureRun = 32

// captureIndex finds, in a haystack, every captureRun-byte window of a set
// of plaintexts, at any offset of either. It is a hash table of the
// plaintext windows: one 64-bit entry per window, its high bits a hash of
// the window and its low posBits the window's offset in the concatenated
// plaintexts, grouped in buckets by the hash's top bits. A haystack
// window whose hash matches an entry is confirmed byte by byte, so hash
// collisions cost time, never a wrong answer.
type captureIndex struct {
	names   []string
	starts  []int  // offset of each plaintext in all
	all     []byte // the plaintexts, concatenated
	posBits int
	topBits int      // bucket = hash >> (64 - topBits)
	bucket  []uint32 // bucket b's entries are entries[bucket[b]:bucket[b+1]]
	entries []uint64
}

// captureBase is the multiplier of the rolling hash (the 64-bit FNV
// prime; any odd number would do).
const captureBase = 0x100000001b3

// captureBaseTop is captureBase^(captureRun-1), the weight of the byte
// that leaves the window.
var captureBaseTop = func() uint64 {
	x := uint64(1)
	for range captureRun - 1 {
		x *= captureBase
	}
	return x
}()

// captureMix spreads the rolling hash's bits, so its top bits are good.
func captureMix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// captureRoll calls fn with the offset and mixed hash of every
// captureRun-byte window of b.
func captureRoll(b []byte, fn func(off int, h uint64)) {
	if len(b) < captureRun {
		return
	}
	var h uint64
	for _, c := range b[:captureRun] {
		h = h*captureBase + uint64(c)
	}
	fn(0, captureMix(h))
	for i := captureRun; i < len(b); i++ {
		h = (h-uint64(b[i-captureRun])*captureBaseTop)*captureBase + uint64(b[i])
		fn(i-captureRun+1, captureMix(h))
	}
}

func newCaptureIndex(names []string, texts [][]byte) *captureIndex {
	ix := &captureIndex{names: names}
	for _, t := range texts {
		ix.starts = append(ix.starts, len(ix.all))
		ix.all = append(ix.all, t...)
	}
	ix.posBits = bits.Len(uint(len(ix.all)))
	ix.topBits = max(bits.Len(uint(len(ix.all))), 1) // about one window per bucket
	keys := make([]uint64, 0, len(ix.all))
	for k, t := range texts {
		start := ix.starts[k]
		captureRoll(t, func(off int, h uint64) {
			keys = append(keys, h>>ix.posBits<<ix.posBits|uint64(start+off))
		})
	}
	// A counting sort by bucket.
	ix.bucket = make([]uint32, 1<<ix.topBits+1)
	for _, e := range keys {
		ix.bucket[e>>(64-ix.topBits)+1]++
	}
	for b := 1; b < len(ix.bucket); b++ {
		ix.bucket[b] += ix.bucket[b-1]
	}
	fill := slices.Clone(ix.bucket[:len(ix.bucket)-1])
	ix.entries = make([]uint64, len(keys))
	for _, e := range keys {
		b := e >> (64 - ix.topBits)
		ix.entries[fill[b]] = e
		fill[b]++
	}
	return ix
}

// captureHit is one plaintext window found in a haystack.
type captureHit struct {
	name        string // which plaintext
	off, hayOff int    // where in it, and where in the haystack
	runLen      int    // how long the common run is from there
}

// find returns up to limit hits of plaintext windows in hay, and how many
// windows of each plaintext (by name) it holds in all.
func (ix *captureIndex) find(hay []byte, limit int) ([]captureHit, map[string]int) {
	var hits []captureHit
	total := map[string]int{}
	mask := uint64(1)<<ix.posBits - 1
	captureRoll(hay, func(hoff int, h uint64) {
		prefix := h >> ix.posBits << ix.posBits
		b := h >> (64 - ix.topBits)
		for _, e := range ix.entries[ix.bucket[b]:ix.bucket[b+1]] {
			if e&^mask != prefix {
				continue
			}
			pos := int(e & mask)
			if !bytes.Equal(ix.all[pos:pos+captureRun], hay[hoff:hoff+captureRun]) {
				continue // a hash collision
			}
			k, _ := slices.BinarySearch(ix.starts, pos+1)
			k-- // the plaintext holding pos
			total[ix.names[k]]++
			if len(hits) >= limit {
				continue
			}
			end := len(ix.all)
			if k+1 < len(ix.starts) {
				end = ix.starts[k+1]
			}
			n := captureRun
			for pos+n < end && hoff+n < len(hay) && ix.all[pos+n] == hay[hoff+n] {
				n++
			}
			hits = append(hits, captureHit{name: ix.names[k], off: pos - ix.starts[k], hayOff: hoff, runLen: n})
		}
	})
	return hits, total
}

// captureDump is a running tcpdump and what it printed on stderr.
type captureDump struct {
	cmd    *exec.Cmd
	path   string
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func (d *captureDump) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.Write(p)
}

func (d *captureDump) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// tcpdump's counts, as it prints them on SIGUSR1 and at exit.
var (
	captureCaptured = regexp.MustCompile(`(\d+) packets? captured`)
	captureReceived = regexp.MustCompile(`(\d+) packets? received by filter`)
)

// counts asks tcpdump for its packet counts (SIGUSR1) and returns the
// last it printed: packets it wrote out, and packets the kernel handed
// to its buffer.
func (d *captureDump) counts() (captured, received int, err error) {
	before := strings.Count(d.output(), "packets received by filter")
	if err := d.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(2 * time.Second)
	for strings.Count(d.output(), "packets received by filter") == before {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("tcpdump printed no counts on SIGUSR1: %q", d.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := d.output()
	last := func(re *regexp.Regexp) int {
		n := -1
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			n, _ = strconv.Atoi(m[1])
		}
		return n
	}
	return last(captureCaptured), last(captureReceived), nil
}

// drain waits until tcpdump has written out every packet the kernel
// handed it (a capture stopped with packets still in its buffer loses
// them).
func (d *captureDump) drain(t *testing.T) {
	t.Helper()
	Eventually(t, 15*time.Second, 100*time.Millisecond, func() error {
		c, r, err := d.counts()
		if err != nil {
			return permanentError{err}
		}
		if c < 0 || r < 0 {
			return permanentError{fmt.Errorf("no packet counts in tcpdump's output %q", d.output())}
		}
		if c < r {
			return fmt.Errorf("tcpdump has written %d of the %d packets it received", c, r)
		}
		return nil
	})
}

// stop ends the capture with SIGINT (tcpdump then flushes and reports its
// counts), with SIGKILL if it has not exited within 10 s.
func (d *captureDump) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		t.Errorf("tcpdump still runs 10 s after SIGINT; killing it")
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// captureStart starts cmd, a tcpdump writing to path, stops it when the
// test ends, and waits until it says it is listening.
func captureStart(t *testing.T, cmd *exec.Cmd, path string) *captureDump {
	t.Helper()
	d := &captureDump{cmd: cmd, path: path, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d, d
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tcpdump: %v", err)
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop(t) })
	Eventually(t, 15*time.Second, 50*time.Millisecond, func() error {
		select {
		case <-d.done:
			return permanentError{fmt.Errorf("tcpdump exited (%v): %s", d.err, d.output())}
		default:
		}
		if !strings.Contains(d.output(), "listening on") {
			return fmt.Errorf("tcpdump not listening yet: %q", d.output())
		}
		return nil
	})
	return d
}

// captureSendClear sends payload unencrypted over TCP from host from to
// host to, inside the testbed, and checks it arrived whole.
func captureSendClear(t *testing.T, tb *netns.Testbed, from, to int, payload []byte) {
	t.Helper()
	var ln net.Listener
	err := tb.Do(to, func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(tb.Hosts()[to].Addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		got <- b
	}()
	var conn net.Conn
	err = tb.Do(from, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Write(payload)
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, payload) {
			t.Fatalf("the clear-text canary arrived as %d bytes, not the %d sent", len(b), len(payload))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the clear-text canary did not arrive within 15 s")
	}
}

// The issue: a tcpdump capture on a testbed link during a swarm transfer
// and a kv put holds no 32-byte run of the file's or the value's
// plaintext. Three peers in the testbed; tcpdump on host 1's link (its
// eth0, every byte it sends or receives). Peer 0 shares a random 4 MiB
// file and peer 1 fetches it, so the whole file crosses that link; peer 1
// puts a 4 KiB random hex value, which it stores on the two other
// replicas across the link, and peer 0 reads it back. No 32-byte window
// of the file or the value, at any offset, may occur anywhere in the
// capture file, and the capture must hold at least the file's size, or
// it proves nothing.
func TestCaptureHoldsNoPlaintext(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Skipf("SKIPPING: tcpdump is not installed (apt-get install tcpdump): %v", err)
	}
	tb, c := testbedCluster(t, 3)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))

	const fileSize = 4 << 20
	dir := t.TempDir()
	file := make([]byte, fileSize)
	if _, err := rand.Read(file); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "secret.bin")
	if err := os.WriteFile(src, file, 0o644); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 2048)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	value := hex.EncodeToString(raw) // printable, and random: nothing to compress
	// The canary is sent in the clear across the same link: finding it
	// shows the capture holds payload bytes as they crossed the wire.
	canary := make([]byte, 4096)
	if _, err := rand.Read(canary); err != nil {
		t.Fatal(err)
	}

	// Index the plaintexts first, and check the index finds a planted run
	// of each at odd offsets, and no run one byte shorter.
	ix := newCaptureIndex([]string{"file", "value", "canary"}, [][]byte{file, []byte(value), canary})
	noise := make([]byte, 1<<16)
	if _, err := rand.Read(noise); err != nil {
		t.Fatal(err)
	}
	// plant puts text[off:off+n] between two bytes that differ from its
	// neighbours in text, so that the planted run is exactly n long.
	plant := func(text []byte, off, n int) []byte {
		return slices.Concat([]byte{text[off-1] ^ 0xff}, text[off:off+n], []byte{text[off+n] ^ 0xff})
	}
	planted := slices.Concat(noise[:777], plant(file, 123457, captureRun), noise[777:5000],
		plant([]byte(value), 4001, captureRun-1), noise[5000:9001], plant([]byte(value), 99, captureRun), noise[9001:])
	hits, n := ix.find(planted, 10)
	if n["file"] != 1 || n["value"] != 1 || n["canary"] != 0 || len(hits) != 2 ||
		hits[0].name != "file" || hits[0].off != 123457 || hits[1].name != "value" || hits[1].off != 99 {
		t.Fatalf("the scanner's self-check: found %v runs %+v, want the file's at 123457 and the value's at 99", n, hits)
	}

	pcap := filepath.Join(dir, "link.pcap")
	// -Z root: tcpdump would otherwise drop to its own user before
	// opening the output, which cannot write in the test's folder.
	dump := captureStart(t, tb.Command(1, tcpdump, "-i", "eth0", "-n", "-s", "0", "-B", "16384", "--immediate-mode", "-U", "-Z", "root", "-w", pcap), pcap)

	ctx := context.Background()
	seed, err := c.Peers[0].api()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := seed.Share(ctx, node.ShareRequest{Path: src})
	if err != nil {
		t.Fatal(err)
	}
	getter, err := c.Peers[1].api()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := getter.StartGet(ctx, node.GetRequest{Ref: sh.InfoHash, Out: filepath.Join(c.Peers[1].Home, "downloads")}); err != nil {
		t.Fatal(err)
	}
	st := swarmDone(t, c.Peers[1], sh.InfoHash, 90*time.Second)
	got, err := os.ReadFile(st.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, file) {
		t.Fatalf("%s: the fetched copy %s differs from the original", c.Peers[1].Name, st.Path)
	}
	t.Logf("%s fetched the %d-byte file in %.1f s", c.Peers[1].Name, fileSize, time.Since(start).Seconds())

	pi, err := getter.Put(ctx, node.PutRequest{Key: "capture/secret", Value: value, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if pi.Replicas != 3 {
		t.Fatalf("the value went to %d replicas, want all 3 peers", pi.Replicas)
	}
	Eventually(t, 20*time.Second, pollInterval, func() error {
		g, err := seed.KVGet(ctx, "capture/secret")
		if err != nil {
			return err
		}
		if g.Value != value {
			return permanentError{fmt.Errorf("%s reads a different value back", c.Peers[0].Name)}
		}
		return nil
	})

	captureSendClear(t, tb, 0, 1, canary)

	dump.drain(t)
	dump.stop(t)
	t.Logf("tcpdump: %s", strings.Join(strings.Fields(dump.output()), " "))
	capture, err := os.ReadFile(pcap)
	if err != nil {
		t.Fatal(err)
	}
	if len(capture) < fileSize {
		t.Fatalf("the capture holds %d bytes, less than the %d-byte file it should have seen: it proves nothing", len(capture), fileSize)
	}
	scan := time.Now()
	hits, n = ix.find(capture, 10)
	t.Logf("scanned a %d-byte capture for every %d-byte run of the file and the value in %.2f s: %d of the file, %d of the value, %d of the canary",
		len(capture), captureRun, time.Since(scan).Seconds(), n["file"], n["value"], n["canary"])
	if want := len(canary) - captureRun + 1; n["canary"] < want {
		t.Errorf("the capture holds %d of the canary's %d windows, though it crossed the link in the clear: the capture cannot show plaintext", n["canary"], want)
	}
	for _, h := range hits {
		if h.name != "canary" {
			t.Errorf("plaintext on the wire: %d bytes of the %s from offset %d at capture offset %d", h.runLen, h.name, h.off, h.hayOff)
		}
	}
	if n["file"]+n["value"] > 0 {
		t.Errorf("the capture holds %d windows of the file and %d of the value", n["file"], n["value"])
	}
}

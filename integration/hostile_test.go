package integration

import (
	"bufio"
	"bytes"
	"compress/lzw"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/peer-overlay/peer/dht"
	"github.com/peer-overlay/peer/internal/p2phost"
	"github.com/peer-overlay/peer/node"
	"github.com/peer-overlay/peer/overlay"
	fwdwire "github.com/peer-overlay/peer/overlay/onehop/wire"
	"github.com/peer-overlay/peer/overlay/ron"
	"github.com/peer-overlay/peer/swarm/wire"
)

// The hostile-peer scenario's bounds. Every loop of the attack stops at its
// count or when the witness's ping run ends, whichever comes first.
const (
	hostileStreams        = 10_000 // streams the flooding peer opens in one burst
	hostileJunkStreams    = 48     // of those, streams fed junk that never ends (until the attack stops)
	hostileJunkPerStream  = 8 << 20
	hostileDeafPings      = 8     // ping streams each new identity floods and never reads
	hostileConnAttempts   = 2_000 // new connections at most
	hostileRefusalsEnough = 40    // refused connection attempts after which the flood stops
	hostilePings          = 300
	hostilePingEvery      = 50 * time.Millisecond
	hostileMaxLoss        = 0.02
	hostileMaxRSS         = 200 << 20
	hostileAttackLimit    = 40 * time.Second // the whole attack, whatever happens
)

// TestHostilePeer is the hostile peer. A peer in the test process
// connects to the victim and at once (1) opens 10,000 streams in a burst on
// every protocol the victim serves, leaving them open or writing garbage,
// (2) sends frames whose length prefix claims 1 GiB or the largest frame a
// protocol allows and then junk that does not end, and (3) opens
// connections under new identities, and raw TCP connections that stall in
// the handshake, until the victim refuses them. Meanwhile a third peer, the
// witness, runs `peer ping` at the victim every 50 ms.
//
// The victim must answer the pings (at most 2% lost), stay under 200 MiB
// RSS, refuse the oversized frames with a clear error in its log, and serve
// the group afterwards. The ping round-trip times and the peak RSS are
// logged, not asserted: the test machine is shared.
func TestHostilePeer(t *testing.T) {
	c := NewCluster(t, 3)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	victim, witness := c.Peers[1], c.Peers[2]
	target, err := peer.AddrInfoFromString(victim.Addr)
	if err != nil {
		t.Fatal(err)
	}
	// The witness must reach the victim before the attack starts, so that
	// what the attack does is all that can fail the pings.
	Eventually(t, convergeTimeout, pollInterval, func() error {
		rep, err := hostilePing(witness, victim.ID, 1, hostilePingEvery)
		if err != nil {
			return err
		}
		if rep.Answered != 1 {
			return fmt.Errorf("%s: the witness's first ping went unanswered: %+v", victim.Name, rep.Pings)
		}
		return nil
	})
	connsBefore, err := victim.Connections()
	if err != nil {
		t.Fatal(err)
	}
	rssBefore, _ := hostileProcStatus(victim.cmd.Process.Pid, "VmRSS")
	logBefore := hostileLogLines(victim)

	start := time.Now()
	ctx, stop := context.WithTimeout(context.Background(), hostileAttackLimit)
	defer stop()
	rss := hostileWatchRSS(ctx, victim.cmd.Process.Pid)
	a := &hostileAttack{t: t, target: *target}
	defer a.cleanup()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.streamFlood(ctx) }()
	go func() { defer wg.Done(); a.connFlood(ctx) }()

	rep, pingErr := hostilePing(witness, victim.ID, hostilePings, hostilePingEvery)
	stop() // the pings are done: so is the attack
	wg.Wait()
	attackTook := time.Since(start)
	peak := rss.peak()
	hwm, _ := hostileProcStatus(victim.cmd.Process.Pid, "VmHWM")
	logLines := hostileLogLines(victim) - logBefore
	if pingErr != nil {
		t.Fatalf("the witness's ping run failed: %v", pingErr)
	}

	rtts := make([]float64, 0, len(rep.Pings))
	for _, p := range rep.Pings {
		if p.Error == "" {
			rtts = append(rtts, p.RTTms)
		}
	}
	slices.Sort(rtts)
	s, side := a.streams.summary(), a.side.summary()
	suspected := 0
	for _, p := range []*Peer{c.Peers[0], witness} {
		suspected += hostileSuspicions(p, victim.ID)
	}
	// One line of figures for the record; none of the speeds is asserted.
	t.Logf("hostile: ping p50=%.2fms p99=%.2fms max=%.2fms loss=%.1f%% (%d/%d) peak_rss=%.1fMiB (vmhwm=%.1fMiB, before=%.1fMiB) "+
		"flood_streams=%d reset_by_victim=%d held_to_end=%d conns_accepted=%d first_refusal_after=%d conns_refused=%d raw_tcp=%d "+
		"side_streams=%d side_reset=%d side_held=%d junk=%dMiB victim_suspected=%d victim_log_lines=%d attack=%v",
		hostileQuantile(rtts, 0.50), hostileQuantile(rtts, 0.99), hostileQuantile(rtts, 1),
		100*rep.Loss, rep.Sent-rep.Answered, rep.Sent,
		float64(peak)/(1<<20), float64(hwm)/(1<<20), float64(rssBefore)/(1<<20),
		s.opened, s.refused, s.held,
		a.connsAccepted.Load(), a.firstRefusalAfter.Load(), a.connsRefused.Load(), a.rawConns.Load(),
		side.opened, side.refused, side.held, a.junk.Load()>>20, suspected, logLines,
		attackTook.Round(100*time.Millisecond))
	for _, e := range s.errors {
		t.Logf("hostile: flood stream ended %d times with: %s", e.n, e.err)
	}

	if !victim.running() {
		t.Fatal(victim.exitedError())
	}
	if rep.Sent != hostilePings {
		t.Errorf("the witness sent %d pings, want %d", rep.Sent, hostilePings)
	}
	if rep.Loss > hostileMaxLoss {
		var lost []string
		for _, p := range rep.Pings {
			if p.Error != "" && len(lost) < 5 {
				lost = append(lost, fmt.Sprintf("seq %d: %s", p.Seq, p.Error))
			}
		}
		t.Errorf("the victim answered %d of %d pings (%.1f%% lost, limit %.0f%%); first losses: %s",
			rep.Answered, rep.Sent, 100*rep.Loss, 100*hostileMaxLoss, strings.Join(lost, "; "))
	}
	if peak >= hostileMaxRSS || hwm >= hostileMaxRSS {
		t.Errorf("the victim's RSS peaked at %.1f MiB (VmHWM %.1f MiB), limit %d MiB",
			float64(peak)/(1<<20), float64(hwm)/(1<<20), hostileMaxRSS>>20)
	}
	if s.opened != hostileStreams {
		t.Errorf("the attacker opened %d streams, want %d", s.opened, hostileStreams)
	}
	if s.refused == 0 {
		t.Errorf("the victim refused none of %d streams from one peer", s.opened)
	}
	if a.connsRefused.Load() == 0 {
		t.Errorf("the victim accepted all %d connections and refused none", a.connsAccepted.Load())
	}

	// A clear error for the bad input: the victim's log names what it
	// refused.
	Eventually(t, 10*time.Second, pollInterval, func() error {
		b, err := os.ReadFile(victim.LogPath)
		if err != nil {
			return err
		}
		for _, want := range []string{
			"frame of 1073741824 bytes",             // chord
			"push/pull of 1048576 nodes refused",    // memberlist stream
			"compressed memberlist message refused", // memberlist stream
			"malformed forwarding header",           // RON forwarding
		} {
			if !bytes.Contains(b, []byte(want)) {
				return fmt.Errorf("%s's log does not say %q", victim.Name, want)
			}
		}
		return nil
	})

	// Loses nothing: once the attacker is gone, the victim drops what it
	// held, still takes a new connection, and serves the group.
	a.cleanup()
	Eventually(t, convergeTimeout, pollInterval, func() error {
		n, err := victim.Connections()
		if err != nil {
			return err
		}
		if n > connsBefore+1 {
			return fmt.Errorf("%s still holds %d connections after the attacker left, %d before", victim.Name, n, connsBefore)
		}
		return nil
	})
	hostileFreshPing(t, *target)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	hostileKV(t, victim, witness)
}

// hostileAttack is the attacker: its hosts, its raw connections, and what
// it counted.
type hostileAttack struct {
	t      *testing.T
	target peer.AddrInfo

	mu    sync.Mutex
	hosts []host.Host
	raws  []net.Conn

	streams hostileStreamLog // the flooding peer's
	side    hostileStreamLog // those of the connection flood's identities
	junk    atomic.Int64     // bytes of junk written

	connsAccepted, connsRefused, firstRefusalAfter, rawConns atomic.Int64
}

// hostileNewHost makes an attacker host: loopback TCP only, no listener, no
// limits of its own.
func hostileNewHost() (host.Host, error) {
	return libp2p.New(append(p2phost.Options(),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
	)...)
}

func (a *hostileAttack) keep(h host.Host) {
	a.mu.Lock()
	a.hosts = append(a.hosts, h)
	a.mu.Unlock()
}

// cleanup closes every host and raw connection; it may run more than once.
func (a *hostileAttack) cleanup() {
	a.mu.Lock()
	hosts, raws := a.hosts, a.raws
	a.hosts, a.raws = nil, nil
	a.mu.Unlock()
	for _, c := range raws {
		_ = c.Close()
	}
	if err := p2phost.CloseAll(hosts, 15*time.Second); err != nil {
		a.t.Errorf("closing the attacker's hosts: %v", err)
	}
	a.streams.wait()
	a.side.wait()
}

// hostileKind is one way of abusing a protocol on a new stream: what the
// attacker writes first, and whether it then writes junk without end.
type hostileKind struct {
	name  string
	proto protocol.ID
	first func() []byte
	junk  bool
}

func hostileUvarint(n uint64) []byte { return binary.AppendUvarint(nil, n) }

func hostileJunkBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

var hostileKinds = []hostileKind{
	{"ping: half a ping, then silence", overlay.PingProtocol, func() []byte { return hostileJunkBytes(16) }, false},
	{"memberlist packet: 1 GiB frame", overlay.PacketProtocol, func() []byte { return append(hostileUvarint(1<<30), hostileJunkBytes(64)...) }, false},
	{"memberlist packet: endless junk frames", overlay.PacketProtocol, func() []byte { return append(hostileUvarint(1000), hostileJunkBytes(1000)...) }, true},
	{"memberlist stream: bad message type", overlay.StreamProtocol, func() []byte { return append([]byte{0xee}, hostileJunkBytes(64)...) }, false},
	{"chord: 1 GiB frame", dht.Protocol, func() []byte { return append(hostileUvarint(1<<30), hostileJunkBytes(64)...) }, false},
	{"chord: 64 MiB frame then junk", dht.Protocol, func() []byte { return append(hostileUvarint(64<<20), hostileJunkBytes(64)...) }, true},
	{"chord: largest frame, endless junk", dht.Protocol, func() []byte { return append(hostileUvarint(4<<20), hostileJunkBytes(64)...) }, true},
	{"swarm: 4 GiB frame instead of a handshake", wire.Protocol, func() []byte { return append([]byte{0xff, 0xff, 0xff, 0xff}, hostileJunkBytes(64)...) }, false},
	{"swarm: unknown swarm, then a 4 GiB frame", wire.Protocol, func() []byte {
		b := append([]byte("PSW1"), hostileJunkBytes(28)...)
		return append(b, 0xff, 0xff, 0xff, 0xf0)
	}, false},
	{"ron: 1 GiB row", ron.Protocol, func() []byte { return append([]byte{ron.MsgRow}, hostileUvarint(1<<30)...) }, false},
	{"ron: silence", ron.Protocol, func() []byte { return nil }, false},
	{"ron: endless junk", ron.Protocol, func() []byte { return hostileJunkBytes(64) }, true},
	{"ron fwd: junk header", fwdwire.FwdProtocol, func() []byte { return append(hostileUvarint(1<<30), hostileJunkBytes(64)...) }, false},
	{"ron fwd-in: junk header", fwdwire.FwdInProtocol, func() []byte { return hostileJunkBytes(64) }, false},
	{"ping: silence", overlay.PingProtocol, func() []byte { return nil }, false},
	{"memberlist packet: compressed to 40 MiB", overlay.PacketProtocol, func() []byte {
		p := append([]byte{hostileCompressMsg}, hostileBomb()...)
		return append(hostileUvarint(uint64(len(p))), p...)
	}, false},
	{"memberlist stream: compressed to 40 MiB", overlay.StreamProtocol, func() []byte {
		return append([]byte{hostileCompressMsg}, hostileBomb()...)
	}, false},
	{"memberlist stream: push/pull of 1M nodes", overlay.StreamProtocol, func() []byte {
		return append([]byte{hostilePushPullMsg}, hostileMsgpack(map[string]any{"Nodes": 1 << 20, "UserStateLen": 0, "Join": false})...)
	}, false},
	{"memberlist stream: push/pull with 20 MB of user state, endless junk", overlay.StreamProtocol, func() []byte {
		return append([]byte{hostilePushPullMsg}, hostileMsgpack(map[string]any{"Nodes": 0, "UserStateLen": 20 << 20, "Join": false})...)
	}, true},
}

func hostileKindNamed(name string) hostileKind {
	for _, k := range hostileKinds {
		if k.name == name {
			return k
		}
	}
	panic("no hostile kind " + name)
}

// memberlist's message types (hashicorp/memberlist net.go).
const (
	hostilePushPullMsg = 6
	hostileCompressMsg = 9
)

// hostileBomb is a memberlist compress message whose LZW payload of some
// 30 KiB inflates to just under the 40 MiB memberlist allows.
var hostileBomb = sync.OnceValue(func() []byte {
	var z bytes.Buffer
	w := lzw.NewWriter(&z, lzw.LSB, 8)
	zeros := make([]byte, 1<<20)
	for range 39 {
		_, _ = w.Write(zeros)
	}
	_ = w.Close()
	return hostileMsgpack(struct {
		Algo uint8
		Buf  []byte
	}{0, z.Bytes()})
})

func hostileMsgpack(v any) []byte {
	var b bytes.Buffer
	if err := codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(v); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// streamFlood opens hostileStreams streams from one peer in a burst,
// cycling through hostileKinds; a reader on each notes when the victim
// resets or ends it.
func (a *hostileAttack) streamFlood(ctx context.Context) {
	h, err := hostileNewHost()
	if err != nil {
		a.t.Errorf("attacker host: %v", err)
		return
	}
	a.keep(h)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = h.Connect(cctx, a.target)
	cancel()
	if err != nil {
		a.t.Errorf("the flooding peer could not connect to the victim: %v", err)
		return
	}
	junkLeft := hostileJunkStreams
	for i := range hostileStreams {
		if ctx.Err() != nil {
			return
		}
		k := hostileKinds[i%len(hostileKinds)]
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := h.NewStream(sctx, a.target.ID, k.proto)
		cancel()
		a.streams.opened.Add(1)
		if err != nil {
			a.streams.failed(err)
			continue
		}
		junk := k.junk && junkLeft > 0
		if junk {
			junkLeft--
		}
		a.streams.track(ctx, s, k.first(), junk, false, &a.junk)
	}
}

// connFlood opens connections to the victim under new identities, each
// holding a few idle streams, and raw TCP connections that stop halfway
// through the handshake, until the victim has refused
// hostileRefusalsEnough of them.
func (a *hostileAttack) connFlood(ctx context.Context) {
	tcpAddr := ""
	for _, m := range a.target.Addrs {
		if s, err := m.ValueForProtocol(ma.P_IP4); err == nil {
			if p, err := m.ValueForProtocol(ma.P_TCP); err == nil {
				tcpAddr = net.JoinHostPort(s, p)
			}
		}
	}
	for i := range hostileConnAttempts {
		if ctx.Err() != nil || a.connsRefused.Load() >= hostileRefusalsEnough {
			return
		}
		if i%4 == 3 && tcpAddr != "" {
			// Half a multistream handshake, then nothing.
			d := net.Dialer{Timeout: 2 * time.Second}
			if c, err := d.DialContext(ctx, "tcp", tcpAddr); err == nil {
				_, _ = c.Write([]byte("\x13/multistream/1.0.0\n\x0d/no"))
				a.mu.Lock()
				a.raws = append(a.raws, c)
				a.mu.Unlock()
				a.rawConns.Add(1)
			}
			continue
		}
		h, err := hostileNewHost()
		if err != nil {
			a.t.Errorf("attacker host %d: %v", i, err)
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = h.Connect(cctx, a.target)
		if err == nil {
			// Connect returns before the victim's resource manager has
			// had its say on an inbound connection; a stream shows it.
			var s network.Stream
			s, err = h.NewStream(cctx, a.target.ID, overlay.PingProtocol)
			if err == nil {
				ping := hostileJunkBytes(32)
				_ = s.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = s.Write(ping)
				if err == nil {
					_, err = io.ReadFull(s, make([]byte, 32))
				}
				_ = s.SetDeadline(time.Time{})
				// The ping stream stays open, idle, as do these.
				for _, name := range []string{"ron: silence", "chord: 1 GiB frame", "memberlist packet: 1 GiB frame"} {
					k := hostileKindNamed(name)
					a.side.opened.Add(1)
					if s2, err := h.NewStream(cctx, a.target.ID, k.proto); err == nil {
						a.side.track(ctx, s2, k.first(), false, false, &a.junk)
					}
				}
				// Pings it never reads the echo of: the victim's echo
				// blocks, and its receive window fills with junk.
				for range hostileDeafPings {
					a.side.opened.Add(1)
					if s2, err := h.NewStream(cctx, a.target.ID, overlay.PingProtocol); err == nil {
						a.side.track(ctx, s2, hostileJunkBytes(32), true, true, &a.junk)
					}
				}
			}
		}
		cancel()
		if err != nil {
			_ = p2phost.Close(h, 5*time.Second)
			if ctx.Err() != nil {
				return // the attack ended, not the victim's patience
			}
			if a.connsRefused.Add(1) == 1 {
				a.firstRefusalAfter.Store(a.connsAccepted.Load())
			}
			continue
		}
		a.keep(h)
		a.connsAccepted.Add(1)
	}
}

// hostileStreamLog counts the attacker's streams and how they ended.
type hostileStreamLog struct {
	opened, refused, live atomic.Int64
	wg                    sync.WaitGroup
	mu                    sync.Mutex
	errs                  map[string]int
}

type hostileErrCount struct {
	err string
	n   int
}

type hostileStreamSummary struct {
	opened, refused, held int64
	errors                []hostileErrCount
}

func (l *hostileStreamLog) failed(err error) {
	l.refused.Add(1)
	l.note(err)
}

func (l *hostileStreamLog) note(err error) {
	msg := err.Error()
	// Keep the kind of error, not the stream's own numbers.
	if i := strings.IndexAny(msg, "0123456789"); i > 0 {
		msg = msg[:i]
	}
	l.mu.Lock()
	if l.errs == nil {
		l.errs = map[string]int{}
	}
	l.errs[msg]++
	l.mu.Unlock()
}

// track writes first on s and then, with junk, random bytes until the
// stream fails, the attack ends or hostileJunkPerStream is written; a
// reader counts the stream as refused when the victim resets or ends it
// before the attack does. A deaf stream has no reader: it is counted
// refused when a write fails.
func (l *hostileStreamLog) track(ctx context.Context, s network.Stream, first []byte, junk, deaf bool, written *atomic.Int64) {
	l.live.Add(1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
		defer stop()
		if len(first) > 0 {
			_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := s.Write(first); err != nil {
				l.ended(ctx, err)
				return
			}
		} else {
			// A lazily negotiated stream reaches the victim with its
			// first write; an empty one only sends the protocol.
			_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = s.Write(nil)
		}
		if deaf {
			buf := hostileJunkBytes(16 << 10)
			for n := 0; n < hostileJunkPerStream && ctx.Err() == nil; n += len(buf) {
				_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if _, err := s.Write(buf); err != nil {
					l.ended(ctx, err)
					return
				}
				written.Add(int64(len(buf)))
			}
			<-ctx.Done()
			l.ended(ctx, nil)
			return
		}
		if junk {
			go func() {
				buf := hostileJunkBytes(16 << 10)
				for n := 0; n < hostileJunkPerStream && ctx.Err() == nil; n += len(buf) {
					_ = s.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if _, err := s.Write(buf); err != nil {
						return
					}
					written.Add(int64(len(buf)))
				}
			}()
		}
		_, err := io.Copy(io.Discard, s)
		if err == nil {
			err = io.EOF
		}
		l.ended(ctx, err)
	}()
}

func (l *hostileStreamLog) ended(ctx context.Context, err error) {
	l.live.Add(-1)
	if ctx.Err() != nil {
		return // the attacker's own reset at the end
	}
	l.failed(err)
}

func (l *hostileStreamLog) wait() { l.wg.Wait() }

func (l *hostileStreamLog) summary() hostileStreamSummary {
	s := hostileStreamSummary{opened: l.opened.Load(), refused: l.refused.Load(), held: l.live.Load()}
	l.mu.Lock()
	for e, n := range l.errs {
		s.errors = append(s.errors, hostileErrCount{e, n})
	}
	l.mu.Unlock()
	slices.SortFunc(s.errors, func(a, b hostileErrCount) int { return b.n - a.n })
	return s
}

// hostilePingReport is what `peer ping --json` prints, as far as the test
// reads it.
type hostilePingReport struct {
	Pings []struct {
		Seq   int     `json:"seq"`
		RTTms float64 `json:"rtt_ms"`
		Error string  `json:"error"`
	} `json:"pings"`
	Sent     int     `json:"sent"`
	Answered int     `json:"answered"`
	Loss     float64 `json:"loss"`
}

// hostilePing runs `peer ping` on from's control API at id, bounded so that
// a hang fails rather than blocks.
func hostilePing(from *Peer, id string, count int, every time.Duration) (hostilePingReport, error) {
	limit := time.Duration(count)*(every+2*time.Second) + 20*time.Second
	limit = min(limit, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, peerBin, "ping", "--home", from.Home, "--json",
		"--count", strconv.Itoa(count), "--interval", every.String(), "--timeout", "2s", id)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return hostilePingReport{}, fmt.Errorf("peer ping still ran after %v; killed; stderr: %s", limit, errb.String())
	}
	var rep hostilePingReport
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		return rep, fmt.Errorf("peer ping: %v; its output does not parse: %v; stderr: %s", err, jerr, errb.String())
	}
	return rep, nil
}

// hostileFreshPing connects a new host to the victim and pings it once on
// the ping protocol: the victim takes connections again.
func hostileFreshPing(t *testing.T, target peer.AddrInfo) {
	t.Helper()
	Eventually(t, 30*time.Second, pollInterval, func() error {
		h, err := hostileNewHost()
		if err != nil {
			return permanentError{err}
		}
		defer func() { _ = p2phost.Close(h, 10*time.Second) }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Connect(ctx, target); err != nil {
			return fmt.Errorf("a new peer cannot connect to the victim after the attack: %w", err)
		}
		s, err := h.NewStream(ctx, target.ID, overlay.PingProtocol)
		if err != nil {
			return fmt.Errorf("a new peer cannot open a ping stream after the attack: %w", err)
		}
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		out, in := hostileJunkBytes(32), make([]byte, 32)
		if _, err := s.Write(out); err != nil {
			return fmt.Errorf("ping after the attack: %w", err)
		}
		if _, err := io.ReadFull(s, in); err != nil {
			return fmt.Errorf("ping after the attack: no echo: %w", err)
		}
		if !bytes.Equal(in, out) {
			return permanentError{errors.New("ping after the attack: the echo differs")}
		}
		return nil
	})
}

// hostileKV puts a record through the victim and reads it back through the
// witness.
func hostileKV(t *testing.T, victim, witness *Peer) {
	t.Helper()
	key, value := "hostile-key", "survived the hostile peer"
	Eventually(t, convergeTimeout, pollInterval, func() error {
		vc, err := victim.api()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := vc.Put(ctx, node.PutRequest{Key: key, Value: value, TTL: "1h"}); err != nil {
			return fmt.Errorf("put through %s after the attack: %w", victim.Name, err)
		}
		wc, err := witness.api()
		if err != nil {
			return err
		}
		got, err := wc.KVGet(ctx, key)
		if err != nil {
			return fmt.Errorf("get through %s after the attack: %w", witness.Name, err)
		}
		if got.Value != value {
			return permanentError{fmt.Errorf("get %q: %q, want %q", key, got.Value, value)}
		}
		return nil
	})
}

// hostileSuspicions counts the lines of p's log in which memberlist
// suspects id or marks it failed.
func hostileSuspicions(p *Peer, id string) int {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, id) && (strings.Contains(line, "Suspect") || strings.Contains(line, "as failed")) {
			n++
		}
	}
	return n
}

// hostileLogLines counts the lines of p's log.
func hostileLogLines(p *Peer) int {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// hostileProcStatus reads one "kB" field of /proc/<pid>/status, in bytes.
func hostileProcStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status %s: %v", pid, field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// hostileRSS is the highest VmRSS seen while it watched.
type hostileRSS struct {
	max  atomic.Int64
	done chan struct{}
}

func (r *hostileRSS) peak() int64 {
	<-r.done
	return r.max.Load()
}

// hostileWatchRSS samples pid's VmRSS every 50 ms until ctx ends.
func hostileWatchRSS(ctx context.Context, pid int) *hostileRSS {
	r := &hostileRSS{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := hostileProcStatus(pid, "VmRSS"); err == nil && v > r.max.Load() {
				r.max.Store(v)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

// hostileQuantile is the q-quantile of sorted xs (nearest rank), 0 if none.
func hostileQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(q*float64(len(xs))+0.5) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

package overlay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// Protocol IDs that carry memberlist over libp2p: best-effort packets
// (probes, gossip) on one long-lived stream per peer and direction, and one
// stream per reliable exchange (push/pull state sync, joins).
const (
	PacketProtocol = "/peer/memberlist/packet/1.0.0"
	StreamProtocol = "/peer/memberlist/stream/1.0.0"
)

// ErrNoNodeName is returned when memberlist asks to reach an address without
// a node name: on this transport a node is reached by its peer ID only.
var ErrNoNodeName = errors.New("overlay: memberlist address without a node name (peer ID)")

// Transport carries memberlist over a libp2p host. Node names are peer IDs,
// so a node is dialled by identity and the host's peerstore supplies the
// addresses; the "ip:port" memberlist gossips serves only as a fallback
// address for a peer the peerstore does not know yet.
//
// Packet timestamps are taken when a frame has been read off the stream,
// before any queueing, so memberlist's probe round-trip times measure the
// network and not our channel backlog.
type Transport struct {
	host        host.Host
	log         *slog.Logger
	dialTimeout time.Duration

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	senders map[peer.ID]*packetSender
	closed  bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// packetSender owns the outbound packet stream to one peer. Its mutex
// serializes writes, which a stream needs, and makes concurrent senders to
// the same peer share one dial.
type packetSender struct {
	mu  sync.Mutex
	s   network.Stream
	buf []byte
}

// writeTimeout bounds one packet write: a peer that does not read is treated
// as a lost packet, never as a stall of memberlist's probe loop.
const writeTimeout = time.Second

// NewTransport registers the memberlist protocols on h. dialTimeout bounds
// opening a stream to a peer that has no connection yet.
func NewTransport(h host.Host, log *slog.Logger, dialTimeout time.Duration) *Transport {
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		host:        h,
		log:         log,
		dialTimeout: dialTimeout,
		packetCh:    make(chan *memberlist.Packet, 256),
		streamCh:    make(chan net.Conn, 16),
		ctx:         ctx,
		cancel:      cancel,
		senders:     make(map[peer.ID]*packetSender),
	}
	h.SetStreamHandler(PacketProtocol, t.handlePacketStream)
	h.SetStreamHandler(StreamProtocol, t.handleStream)
	return t
}

// FinalAdvertiseAddr reports the IP and port memberlist gossips for this
// node: the first routable TCP listen address of the host, else loopback.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	ip, port, ok := advertiseAddr(t.host.Addrs())
	if !ok {
		return nil, 0, errors.New("overlay: the host has no TCP or UDP listen address to advertise")
	}
	return ip, port, nil
}

// advertiseAddr picks the IP and port to gossip: a non-loopback address when
// there is one (a remote peer cannot use our loopback), else loopback.
func advertiseAddr(addrs []ma.Multiaddr) (net.IP, int, bool) {
	var fallbackIP net.IP
	fallbackPort := 0
	for _, a := range addrs {
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		var ip net.IP
		var port int
		switch v := na.(type) {
		case *net.TCPAddr:
			ip, port = v.IP, v.Port
		case *net.UDPAddr:
			ip, port = v.IP, v.Port
		default:
			continue
		}
		if ip.IsUnspecified() {
			continue
		}
		if !ip.IsLoopback() {
			return ip, port, true
		}
		if fallbackIP == nil {
			fallbackIP, fallbackPort = ip, port
		}
	}
	return fallbackIP, fallbackPort, fallbackIP != nil
}

// WriteTo cannot reach a bare address: nodes are addressed by peer ID.
func (t *Transport) WriteTo([]byte, string) (time.Time, error) {
	return time.Time{}, ErrNoNodeName
}

// DialTimeout cannot reach a bare address: nodes are addressed by peer ID.
func (t *Transport) DialTimeout(string, time.Duration) (net.Conn, error) {
	return nil, ErrNoNodeName
}

// WriteToAddress sends one packet to the node named by a.Name (a peer ID).
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if len(b) > maxPacketSize {
		return time.Time{}, fmt.Errorf("overlay: packet of %d bytes exceeds %d", len(b), maxPacketSize)
	}
	pid, err := t.resolve(a)
	if err != nil {
		return time.Time{}, err
	}
	ps := t.sender(pid)
	if ps == nil {
		// Shut down: memberlist's gossip goroutines may outlive the
		// transport by a moment; their packets go nowhere, as a closed
		// UDP socket's would.
		return time.Now(), nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.buf = appendFrame(ps.buf[:0], b)
	// One retry with a fresh stream covers a stream the peer reset (for
	// example because it restarted) since our last packet.
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if ps.s == nil {
			ctx, cancel := context.WithTimeout(t.ctx, t.dialTimeout)
			s, err := t.host.NewStream(ctx, pid, PacketProtocol)
			cancel()
			if err != nil {
				return time.Time{}, fmt.Errorf("overlay: packet stream to %s: %w", pid, err)
			}
			ps.s = s
		}
		_ = ps.s.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := ps.s.Write(ps.buf); err != nil {
			_ = ps.s.Reset()
			ps.s = nil
			lastErr = err
			continue
		}
		return time.Now(), nil
	}
	return time.Time{}, fmt.Errorf("overlay: packet to %s: %w", pid, lastErr)
}

// DialAddressTimeout opens a reliable stream to the node named by a.Name.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	pid, err := t.resolve(a)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	s, err := t.host.NewStream(ctx, pid, StreamProtocol)
	if err != nil {
		return nil, fmt.Errorf("overlay: stream to %s: %w", pid, err)
	}
	return streamConn{s}, nil
}

// PacketCh delivers inbound packets.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh delivers inbound reliable streams.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown stops accepting memberlist traffic and closes outbound streams.
func (t *Transport) Shutdown() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	senders := t.senders
	t.senders = nil
	t.mu.Unlock()

	t.host.RemoveStreamHandler(PacketProtocol)
	t.host.RemoveStreamHandler(StreamProtocol)
	t.cancel()
	for _, ps := range senders {
		ps.mu.Lock()
		if ps.s != nil {
			_ = ps.s.Close()
			ps.s = nil
		}
		ps.mu.Unlock()
	}
	t.wg.Wait()
	return nil
}

// resolve turns a memberlist address into a peer ID, teaching the peerstore
// the gossiped ip:port when it knows no address for that peer.
func (t *Transport) resolve(a memberlist.Address) (peer.ID, error) {
	if a.Name == "" {
		return "", ErrNoNodeName
	}
	pid, err := peer.Decode(a.Name)
	if err != nil {
		return "", fmt.Errorf("overlay: node name %q is not a peer ID: %w", a.Name, err)
	}
	if pid == t.host.ID() {
		return pid, nil
	}
	if len(t.host.Peerstore().Addrs(pid)) == 0 {
		if addrs := addrsFromHostPort(a.Addr); len(addrs) > 0 {
			t.host.Peerstore().AddAddrs(pid, addrs, learnedAddrTTL)
		}
	}
	return pid, nil
}

// learnedAddrTTL is how long an address learned from gossip stays in the
// peerstore without being confirmed by a connection.
const learnedAddrTTL = 10 * time.Minute

// addrsFromHostPort gives the TCP and QUIC multiaddrs for "ip:port": a peer
// listens on both with one port number.
func addrsFromHostPort(hostport string) []ma.Multiaddr {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil
	}
	ip := net.ParseIP(h)
	port, err := strconv.Atoi(p)
	if ip == nil || err != nil || port <= 0 || port > 65535 {
		return nil
	}
	tcp, err1 := manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: port})
	udp, err2 := manet.FromNetAddr(&net.UDPAddr{IP: ip, Port: port})
	if err1 != nil || err2 != nil {
		return nil
	}
	quic, err := ma.NewMultiaddr("/quic-v1")
	if err != nil {
		return nil
	}
	return []ma.Multiaddr{tcp, udp.Encapsulate(quic)}
}

// sender returns the packet sender for pid, or nil once shut down.
func (t *Transport) sender(pid peer.ID) *packetSender {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	ps := t.senders[pid]
	if ps == nil {
		ps = &packetSender{}
		t.senders[pid] = ps
	}
	return ps
}

// forget drops the packet stream to a peer that memberlist has given up on,
// so a dead peer holds no state here.
func (t *Transport) forget(pid peer.ID) {
	t.mu.Lock()
	ps := t.senders[pid]
	delete(t.senders, pid)
	t.mu.Unlock()
	if ps == nil {
		return
	}
	ps.mu.Lock()
	if ps.s != nil {
		_ = ps.s.Reset()
		ps.s = nil
	}
	ps.mu.Unlock()
}

func (t *Transport) handlePacketStream(s network.Stream) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = s.Reset()
		return
	}
	t.wg.Add(1) // under mu, so it never races Shutdown's Wait
	t.mu.Unlock()
	defer t.wg.Done()
	from := streamConn{s}.RemoteAddr()
	r := bufio.NewReader(s)
	stop := context.AfterFunc(t.ctx, func() { _ = s.Reset() })
	defer stop()
	for {
		buf, err := readFrame(r)
		// Stamp at the stream, before the packet waits in any queue.
		now := time.Now()
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = s.Close()
			} else {
				if t.ctx.Err() == nil {
					t.log.Debug("memberlist packet stream dropped", "peer", s.Conn().RemotePeer(), "err", err)
				}
				_ = s.Reset()
			}
			return
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf, From: from, Timestamp: now}:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *Transport) handleStream(s network.Stream) {
	select {
	case t.streamCh <- streamConn{s}:
	case <-t.ctx.Done():
		_ = s.Reset()
	}
}

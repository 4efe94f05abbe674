package overlay

import (
	"bufio"
	"context"
	"encoding/binary"
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
	host host.Host
	log  *slog.Logger

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	ctx        context.Context // inbound streams
	cancel     context.CancelFunc
	dialCtx    context.Context // outbound dials
	dialCancel context.CancelFunc
	closing    chan struct{} // closed when Shutdown starts: senders flush and end
	wg         sync.WaitGroup

	mu      sync.Mutex
	senders map[peer.ID]*packetSender
	closed  bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// packetSender owns the outbound packet stream to one peer. Packets wait
// in a bounded queue and one goroutine dials and writes them, so sending
// never blocks memberlist (a UDP send does not either); when the queue is
// full the packet is dropped, which memberlist tolerates as loss.
type packetSender struct {
	q    chan []byte
	stop chan struct{}
}

// Packet path limits: how many packets may wait for one peer, how long a
// dial may take before the waiting packets are dropped, how long one write
// may take, and how long an idle sender lives.
const (
	packetQueueLen  = 64
	packetDialLimit = 10 * time.Second
	writeTimeout    = time.Second
	senderIdle      = time.Minute
	flushTimeout    = time.Second // for what is queued when we shut down
)

// NewTransport registers the memberlist protocols on h.
func NewTransport(h host.Host, log *slog.Logger) *Transport {
	ctx, cancel := context.WithCancel(context.Background())
	dialCtx, dialCancel := context.WithCancel(context.Background())
	t := &Transport{
		dialCtx:    dialCtx,
		dialCancel: dialCancel,
		closing:    make(chan struct{}),
		host:       h,
		log:        log,
		packetCh:   make(chan *memberlist.Packet, 256),
		streamCh:   make(chan net.Conn, 16),
		ctx:        ctx,
		cancel:     cancel,
		senders:    make(map[peer.ID]*packetSender),
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
		ip, _, port, ok := IPPort(a)
		if !ok || port == 0 || ip.IsUnspecified() {
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

// WriteToAddress queues one packet for the node named by a.Name (a peer
// ID) and returns at once.
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
	select {
	case ps.q <- appendFrame(make([]byte, 0, len(b)+binary.MaxVarintLen64), b):
	default:
		t.log.Debug("memberlist packet dropped: queue full", "peer", pid)
	}
	return time.Now(), nil
}

// warm starts the sender to pid, which dials at once, so that the first
// probe to a new member does not spend its timeout on a dial and handshake.
// Only the peer with the smaller ID warms a pair: if both did, both would
// dial at once and the pair would pay for two connections.
func (t *Transport) warm(pid peer.ID) {
	if t.host.ID() < pid {
		t.sender(pid)
	}
}

// runSender writes pid's queued packets, dialling as needed. It ends when
// the sender is forgotten, the transport shuts down, or after senderIdle
// without packets.
func (t *Transport) runSender(pid peer.ID, ps *packetSender) {
	defer t.wg.Done()
	var s network.Stream
	defer func() {
		if s != nil {
			_ = s.Close()
		}
		t.mu.Lock()
		if t.senders[pid] == ps {
			delete(t.senders, pid)
		}
		t.mu.Unlock()
	}()
	idle := time.NewTimer(senderIdle)
	defer idle.Stop()
	for {
		if s == nil {
			ctx, cancel := context.WithTimeout(t.dialCtx, packetDialLimit)
			ns, err := t.host.NewStream(ctx, pid, PacketProtocol)
			cancel()
			if err != nil {
				if t.dialCtx.Err() != nil {
					return
				}
				t.log.Debug("memberlist packet stream failed", "peer", pid, "err", err)
				// What waited for this dial is stale now; memberlist
				// sees it as loss and retries on its own schedule.
				drain(ps.q)
			} else {
				s = ns
			}
		}
		var frame []byte
		select {
		case frame = <-ps.q:
		case <-idle.C:
			return
		case <-ps.stop:
			return
		case <-t.closing:
			// memberlist's Leave returns once its leave message is handed
			// to us; it must still reach the wire.
			if s != nil {
				flush(s, ps.q)
			}
			return
		}
		idle.Reset(senderIdle)
		if s == nil {
			continue // dial again, then take the next packet
		}
		_ = s.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := s.Write(frame); err != nil {
			// The peer reset the stream (it restarted, say) or stopped
			// reading: drop this packet and dial afresh for the next.
			_ = s.Reset()
			s = nil
		}
	}
}

// flush writes what is queued, within flushTimeout in all.
func flush(s network.Stream, q chan []byte) {
	_ = s.SetWriteDeadline(time.Now().Add(flushTimeout))
	for {
		select {
		case frame := <-q:
			if _, err := s.Write(frame); err != nil {
				return
			}
		default:
			return
		}
	}
}

func drain(q chan []byte) {
	for {
		select {
		case <-q:
		default:
			return
		}
	}
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
	t.mu.Unlock()

	t.host.RemoveStreamHandler(PacketProtocol)
	t.host.RemoveStreamHandler(StreamProtocol)
	close(t.closing)
	t.dialCancel()
	t.cancel()
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

// sender returns the packet sender for pid, starting it if need be, or nil
// once shut down.
func (t *Transport) sender(pid peer.ID) *packetSender {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	ps := t.senders[pid]
	if ps == nil {
		ps = &packetSender{q: make(chan []byte, packetQueueLen), stop: make(chan struct{})}
		t.senders[pid] = ps
		t.wg.Add(1) // under mu, so it never races Shutdown's Wait
		go t.runSender(pid, ps)
	}
	return ps
}

// forget stops the sender to a peer that memberlist has given up on, so a
// dead peer holds no goroutine or stream here.
func (t *Transport) forget(pid peer.ID) {
	t.mu.Lock()
	ps := t.senders[pid]
	delete(t.senders, pid)
	t.mu.Unlock()
	if ps != nil {
		close(ps.stop)
	}
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

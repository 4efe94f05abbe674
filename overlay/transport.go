package overlay

import (
	"bufio"
	"bytes"
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

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/peer-overlay/peer/internal/p2phost"
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

	mu          sync.Mutex
	senders     map[peer.ID]*packetSender
	closed      bool
	inStreams   int             // inbound reliable streams memberlist holds
	inStreamsBy map[peer.ID]int // the same, per peer
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
	// The answer is checked as an inbound stream is.
	return &guardedConn{streamConn: streamConn{Stream: s}, release: func() {}}, nil
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
	from := streamConn{Stream: s}.RemoteAddr()
	// A frame is read whole before it is checked: that, and the reader.
	free, err := p2phost.Reserve(s, maxPacketSize+packetReadBuf)
	if err != nil {
		t.log.Debug("memberlist packet stream refused", "err", err)
		_ = s.Reset()
		return
	}
	defer free()
	r := bufio.NewReaderSize(s, packetReadBuf)
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
		if err := checkPacket(buf, 0); err != nil {
			// Not a packet this group's peers send: refused before
			// memberlist spends memory or CPU on it.
			t.log.Debug("memberlist packet refused", "peer", s.Conn().RemotePeer(), "err", err)
			continue
		}
		select {
		case t.packetCh <- &memberlist.Packet{Buf: buf, From: from, Timestamp: now}:
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *Transport) handleStream(s network.Stream) {
	from := s.Conn().RemotePeer()
	if !t.acquireStream(from) {
		t.log.Debug("memberlist stream refused: too many at once", "peer", from)
		_ = s.Reset()
		return
	}
	// memberlist reads a stream with buffers the size of each message;
	// this peer's group keeps them small (its whole state is a few
	// hundred bytes a member), so this much is held, not maxStreamBytes.
	free, err := p2phost.Reserve(s, streamReserve)
	if err != nil {
		t.releaseStream(from)
		t.log.Debug("memberlist stream refused", "err", err)
		_ = s.Reset()
		return
	}
	g := &guardedConn{streamConn: streamConn{Stream: s}, release: func() { free(); t.releaseStream(from) }}
	select {
	case t.streamCh <- g:
	case <-t.ctx.Done():
		_ = g.Reset()
		g.done()
	}
}

// What an inbound packet stream and a reliable stream reserve from the
// resource manager.
const (
	packetReadBuf = 4096
	streamReserve = 64 << 10
)

// Bounds on inbound reliable streams, which memberlist serves with one
// goroutine each and reads with buffers sized by what the sender declares.
const (
	maxStreamsPerPeer = 4  // in memberlist's hands at once, per peer
	maxStreamsTotal   = 64 // and in all
)

func (t *Transport) acquireStream(p peer.ID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.inStreams >= maxStreamsTotal || t.inStreamsBy[p] >= maxStreamsPerPeer {
		return false
	}
	if t.inStreamsBy == nil {
		t.inStreamsBy = make(map[peer.ID]int)
	}
	t.inStreams++
	t.inStreamsBy[p]++
	return true
}

func (t *Transport) releaseStream(p peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inStreams--
	if t.inStreamsBy[p]--; t.inStreamsBy[p] <= 0 {
		delete(t.inStreamsBy, p)
	}
}

// memberlist's message types (hashicorp/memberlist, net.go) that the
// inbound checks below look at.
const (
	mlPushPull = 6
	mlCompound = 7
	mlUser     = 8
	mlCompress = 9
	mlHasCRC   = 12
	mlHasLabel = 244
)

// Limits of what a peer may send memberlist, far above what this group's
// peers send: memberlist's own limits (20 MiB of user state, a million
// nodes in a push/pull, 40 MiB decompressed) let one stream or one 64 KiB
// packet make it allocate tens of MiB.
const (
	maxPushPullNodes = 1024     // members in one push/pull
	maxStreamUserLen = 64 << 10 // user state or user message (unused here)
	maxStreamBytes   = 4 << 20  // all that one inbound stream may carry
	maxPacketDepth   = 4        // compound and CRC wrappers, nested
)

// Errors for inbound memberlist traffic that is refused.
var (
	ErrCompressed     = errors.New("overlay: compressed memberlist message refused (peers here send none)")
	ErrLabelled       = errors.New("overlay: labelled memberlist message refused (this group uses no label)")
	ErrStreamTooLarge = fmt.Errorf("overlay: memberlist stream carries more than %d bytes", maxStreamBytes)
)

// checkPacket refuses a packet that memberlist would decompress. Peers of
// this group send none (compression is off), and a compressed packet of
// 64 KiB inflates to 40 MiB in memberlist; compound and CRC-wrapped
// packets are checked part by part.
func checkPacket(b []byte, depth int) error {
	if len(b) == 0 {
		return nil // memberlist refuses it
	}
	if depth > maxPacketDepth {
		return fmt.Errorf("overlay: memberlist packet nested more than %d deep", maxPacketDepth)
	}
	switch b[0] {
	case mlCompress:
		return ErrCompressed
	case mlHasLabel:
		return ErrLabelled
	case mlHasCRC:
		if len(b) < 5 {
			return nil
		}
		return checkPacket(b[5:], depth+1)
	case mlCompound:
		// One byte of part count, a 2-byte length per part, the parts.
		if len(b) < 2 {
			return nil
		}
		n := int(b[1])
		rest := b[2:]
		if len(rest) < 2*n {
			return nil // memberlist refuses it as truncated
		}
		lens, parts := rest[:2*n], rest[2*n:]
		for i := range n {
			l := int(binary.BigEndian.Uint16(lens[2*i:]))
			if l > len(parts) {
				return nil
			}
			if err := checkPacket(parts[:l], depth+1); err != nil {
				return err
			}
			parts = parts[l:]
		}
	}
	return nil
}

// guardedConn is an inbound reliable stream as memberlist gets it. Before
// memberlist reads, it checks the message header: memberlist allocates
// what a push/pull or user message header declares before reading it, and
// inflates compressed messages to 40 MiB. It also caps what the stream may
// carry in all, and gives its slot back when memberlist closes it.
type guardedConn struct {
	streamConn
	release func()
	once    sync.Once

	checked bool
	err     error
	r       io.Reader
}

func (g *guardedConn) done() { g.once.Do(g.release) }

func (g *guardedConn) Close() error {
	g.done()
	return g.streamConn.Close()
}

func (g *guardedConn) Read(b []byte) (int, error) {
	if !g.checked {
		g.checked = true
		g.r, g.err = checkStreamHeader(&cappedReader{r: g.streamConn.Stream, left: maxStreamBytes})
		if g.err != nil {
			_ = g.Reset()
		}
	}
	if g.err != nil {
		return 0, g.err
	}
	return g.r.Read(b)
}

// checkStreamHeader reads the first message's type and, for a push/pull or
// a user message, its header, and refuses them when out of bounds. It
// returns a reader that yields what it read and then the rest of r.
func checkStreamHeader(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 512)
	rec := &recordingReader{r: br}
	typ, err := rec.ReadByte()
	if err != nil {
		return br, nil // nothing was read: memberlist sees the same error
	}
	dec := codec.NewDecoder(rec, &codec.MsgpackHandle{})
	switch typ {
	case mlCompress:
		return nil, ErrCompressed
	case mlHasLabel:
		return nil, ErrLabelled
	case mlPushPull:
		var h struct {
			Nodes        int
			UserStateLen int
			Join         bool
		}
		if err := dec.Decode(&h); err != nil {
			return nil, fmt.Errorf("overlay: memberlist push/pull header: %w", err)
		}
		if h.Nodes < 0 || h.Nodes > maxPushPullNodes {
			return nil, fmt.Errorf("overlay: memberlist push/pull of %d nodes refused, limit %d", h.Nodes, maxPushPullNodes)
		}
		if h.UserStateLen < 0 || h.UserStateLen > maxStreamUserLen {
			return nil, fmt.Errorf("overlay: memberlist push/pull with %d bytes of user state refused, limit %d", h.UserStateLen, maxStreamUserLen)
		}
	case mlUser:
		var h struct{ UserMsgLen int }
		if err := dec.Decode(&h); err != nil {
			return nil, fmt.Errorf("overlay: memberlist user message header: %w", err)
		}
		if h.UserMsgLen < 0 || h.UserMsgLen > maxStreamUserLen {
			return nil, fmt.Errorf("overlay: memberlist user message of %d bytes refused, limit %d", h.UserMsgLen, maxStreamUserLen)
		}
	}
	return io.MultiReader(bytes.NewReader(rec.buf), br), nil
}

// recordingReader keeps every byte read through it.
type recordingReader struct {
	r   *bufio.Reader
	buf []byte
}

func (r *recordingReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.buf = append(r.buf, b[:n]...)
	return n, err
}

func (r *recordingReader) ReadByte() (byte, error) {
	c, err := r.r.ReadByte()
	if err == nil {
		r.buf = append(r.buf, c)
	}
	return c, err
}

// cappedReader fails once more than left bytes have been read.
type cappedReader struct {
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, ErrStreamTooLarge
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= int64(n)
	return n, err
}

// streamConn is a stream as memberlist's net.Conn.
type streamConn = p2phost.StreamConn

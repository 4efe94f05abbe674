package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/peer"
)

// halfCloser is a connection whose write side closes alone: a TCP
// connection, a libp2p stream.
type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Counters are a tunnel's byte and connection counts.
type Counters struct {
	In, Out, Conns, Active, Refused atomic.Int64
}

// splice copies a to b and b to a until both directions end, passing on
// each end of stream as a half-close, so that a client that shuts down its
// writes still reads the whole answer. It then closes both. in counts the
// bytes from a to b, out those from b to a.
func splice(a, b halfCloser, in, out *atomic.Int64) {
	var wg sync.WaitGroup
	var once sync.Once
	pipe := func(dst, src halfCloser, n *atomic.Int64) {
		defer wg.Done()
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		if _, err := io.CopyBuffer(counter{dst, n}, src, *buf); err != nil {
			// Not an end of stream but a failure (a reset, a closed
			// connection, a forward being stopped): nothing more can
			// pass either way, and the other direction must not wait
			// for an end that may never come.
			once.Do(func() { _ = a.Close(); _ = b.Close() })
			return
		}
		_ = dst.CloseWrite()
	}
	wg.Add(2)
	go pipe(b, a, in)
	go pipe(a, b, out)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

var bufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// counter counts what is written through it.
type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// proxySignature opens every PROXY protocol version 2 header.
var proxySignature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// TLVPeerID is the PROXY v2 TLV type (in the range kept for applications)
// that carries the caller's peer ID, as text.
const TLVPeerID = 0xE0

// proxyHeader is a PROXY protocol v2 header for a connection from caller:
// command PROXY, family unspecified (a peer has no address the backend
// could use), and the caller's peer ID in a TLV.
func proxyHeader(caller peer.ID) []byte {
	id := []byte(caller.String())
	var b bytes.Buffer
	b.Write(proxySignature)
	b.WriteByte(0x21) // version 2, PROXY
	b.WriteByte(0x00) // AF_UNSPEC, UNSPEC
	_ = binary.Write(&b, binary.BigEndian, uint16(3+len(id)))
	b.WriteByte(TLVPeerID)
	_ = binary.Write(&b, binary.BigEndian, uint16(len(id)))
	b.Write(id)
	return b.Bytes()
}

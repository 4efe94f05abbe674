package p2phost

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/libp2p/go-libp2p/core/protocol"
)

// Loopback starts n libp2p hosts on 127.0.0.1 that know each other's
// addresses.
func Loopback(n int, transport string) ([]host.Host, error) {
	var opts []libp2p.Option
	switch transport {
	case "tcp":
		opts = append(opts, libp2p.Transport(tcp.NewTCPTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Security(noise.ID, noise.New))
	case "quic":
		opts = append(opts, libp2p.Transport(quic.NewTransport), libp2p.ListenAddrStrings("/ip4/127.0.0.1/udp/0/quic-v1"))
	default:
		return nil, fmt.Errorf("transport %q: want tcp or quic", transport)
	}
	opts = append(opts, libp2p.ResourceManager(&network.NullResourceManager{}))
	opts = append(opts, Options()...)
	hosts := make([]host.Host, 0, n)
	for range n {
		h, err := libp2p.New(opts...)
		if err != nil {
			for _, x := range hosts {
				x.Close()
			}
			return nil, err
		}
		hosts = append(hosts, h)
	}
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				a.Peerstore().AddAddrs(b.ID(), b.Addrs(), peerstore.PermanentAddrTTL)
			}
		}
	}
	return hosts, nil
}

// WaitIdentified waits until every host knows that every other speaks the
// swarm protocol.
func WaitIdentified(hosts []host.Host, proto protocol.ID) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range hosts {
		for _, b := range hosts {
			for a != b {
				if ps, _ := a.Peerstore().SupportsProtocols(b.ID(), proto); len(ps) > 0 {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("host %s has not learnt in 30 s that %s speaks %s", a.ID(), b.ID(), proto)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	return nil
}

// ConnectAll connects every pair of hosts, a few at a time.
func ConnectAll(hosts []host.Host) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type pair struct{ a, b host.Host }
	work := make(chan pair)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := p.a.Connect(ctx, peer.AddrInfo{ID: p.b.ID(), Addrs: p.b.Addrs()}); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i, a := range hosts {
		for _, b := range hosts[i+1:] {
			work <- pair{a, b}
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return fmt.Errorf("connect the bench's hosts: %w", err)
	default:
		return nil
	}
}

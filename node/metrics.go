package node

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/peer-overlay/peer/overlay"
)

// Metrics for Prometheus at /metrics. Nearly all are read from the layers'
// own state when scraped (a collector), so no hot path pays for them; the
// few that count events between scrapes (lookup latencies, successor
// changes) are kept here. Names: one peer_ prefix, base units,
// _total on counters. Labels are bounded: member states, NAT roles, the
// members of the RON group (at most its cap of 64) and the active swarms.

type nodeMetrics struct {
	reg *prometheus.Registry

	lookups     *prometheus.HistogramVec
	succChanges prometheus.Counter

	mu       sync.Mutex
	lastSucc string
}

func newMetrics(n *Node) *nodeMetrics {
	m := &nodeMetrics{
		reg: prometheus.NewRegistry(),
		lookups: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "peer_ring_lookup_seconds",
			Help:    "Chord lookups: time from the request to the answer, by result.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		succChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "peer_ring_successor_changes_total",
			Help: "Times this peer's first successor changed (sampled every second).",
		}),
	}
	m.reg.MustRegister(m.lookups, m.succChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "peer"}),
		&nodeCollector{n: n})
	return m
}

// observeLookup is the DHT's hook for each lookup.
func (m *nodeMetrics) observeLookup(d time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	m.lookups.WithLabelValues(res).Observe(d.Seconds())
}

// sample counts successor changes, which happen between scrapes. It
// costs one message to the ring's loop a second.
func (m *nodeMetrics) sample(n *Node) {
	ring := n.dht.Ring()
	succ := ""
	if len(ring.Successors) > 0 {
		succ = ring.Successors[0].Name
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if succ != m.lastSucc && m.lastSucc != "" {
		m.succChanges.Inc()
	}
	m.lastSucc = succ
}

func (m *nodeMetrics) loop(ctx context.Context, n *Node) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sample(n)
		}
	}
}

// nodeCollector reads the layers' state at scrape time.
type nodeCollector struct{ n *Node }

var (
	dMembers     = prometheus.NewDesc("peer_members", "Members of the group as this peer sees them, by state.", []string{"state"}, nil)
	dUptime      = prometheus.NewDesc("peer_uptime_seconds", "Time since this peer started.", nil, nil)
	dRingJoined  = prometheus.NewDesc("peer_ring_joined", "1 once this peer has joined the Chord ring.", nil, nil)
	dRingSuccs   = prometheus.NewDesc("peer_ring_successors", "Entries in this peer's successor list.", nil, nil)
	dRecords     = prometheus.NewDesc("peer_ring_records", "Records held in this peer's store (its own and replicas).", nil, nil)
	dRTT         = prometheus.NewDesc("peer_ron_probe_rtt_seconds", "Smoothed probe round-trip time to each member.", []string{"peer"}, nil)
	dLoss        = prometheus.NewDesc("peer_ron_probe_loss_ratio", "Fraction of recent probes to each member that were lost.", []string{"peer"}, nil)
	dRouteChg    = prometheus.NewDesc("peer_ron_route_changes_total", "Times a chosen route (any metric, any member) moved to another path.", nil, nil)
	dRelayed     = prometheus.NewDesc("peer_ron_routes_relayed", "Members whose latency route goes through another member.", nil, nil)
	dForwarded   = prometheus.NewDesc("peer_ron_forwarded_bytes_total", "Bytes this peer forwarded as the intermediate of one-hop paths.", nil, nil)
	dProbeBytes  = prometheus.NewDesc("peer_ron_probe_sent_bytes_total", "Probe and row bytes this peer sent (estimated, with framing).", nil, nil)
	dReachable   = prometheus.NewDesc("peer_nat_reachable", "1 when other members have dialed this peer directly.", nil, nil)
	dRole        = prometheus.NewDesc("peer_nat_role", "1 for this peer's current role.", []string{"role", "mapping"}, nil)
	dReserv      = prometheus.NewDesc("peer_nat_reservations", "Relay reservations this peer holds on supernodes.", nil, nil)
	dRelayBytes  = prometheus.NewDesc("peer_nat_relayed_bytes_total", "Bytes this peer relayed as a supernode.", nil, nil)
	dCircuits    = prometheus.NewDesc("peer_nat_relay_circuits_total", "Circuits this peer opened as a supernode.", nil, nil)
	dPunches     = prometheus.NewDesc("peer_nat_punches_total", "Hole punches, by result.", []string{"result"}, nil)
	dConns       = prometheus.NewDesc("peer_connections", "Open libp2p connections, by transport.", []string{"transport"}, nil)
	dSwarmBytes  = prometheus.NewDesc("peer_swarm_bytes_total", "Block bytes moved by each active swarm, by direction.", []string{"swarm", "direction"}, nil)
	dSwarmRed    = prometheus.NewDesc("peer_swarm_redundant_bytes_total", "Block bytes each active swarm received but did not need.", []string{"swarm"}, nil)
	dSwarmPieces = prometheus.NewDesc("peer_swarm_pieces", "Pieces of each active swarm, had and in all.", []string{"swarm", "kind"}, nil)
	dSwarmPeers  = prometheus.NewDesc("peer_swarm_peers", "Connected peers of each active swarm.", []string{"swarm"}, nil)
	dSwarms      = prometheus.NewDesc("peer_swarms", "Swarms, complete or not.", []string{"complete"}, nil)
	dTunnelBytes = prometheus.NewDesc("peer_tunnel_bytes_total", "Bytes through this peer's tunnels, by side (expose: services it offers; forward: services it reaches) and direction.", []string{"side", "direction"}, nil)
	dTunnelConns = prometheus.NewDesc("peer_tunnel_connections_total", "Connections through this peer's tunnels, by side.", []string{"side"}, nil)
	dTunnels     = prometheus.NewDesc("peer_tunnels", "Tunnels configured, by side.", []string{"side"}, nil)
	dMail        = prometheus.NewDesc("peer_messages_total", "Messages sent and received.", []string{"direction"}, nil)
	dDistJobs    = prometheus.NewDesc("peer_distribute_jobs", "Distribute jobs this peer started, running or done.", []string{"state"}, nil)
	dDistTargets = prometheus.NewDesc("peer_distribute_targets", "Targets of this peer's running distribute jobs, by state.", []string{"state"}, nil)
	dDistSent    = prometheus.NewDesc("peer_distribute_origin_sent_bytes_total", "Bytes this peer sent as the origin of its distribute jobs.", nil, nil)
	dRcmgr       = prometheus.NewDesc("peer_libp2p_rcmgr_system", "libp2p resource manager: the system scope's use.", []string{"resource"}, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge(ch, dUptime, time.Since(n.started).Seconds())
	states := map[string]int{string(overlay.StateAlive): 0, string(overlay.StateSuspect): 0,
		string(overlay.StateDead): 0, string(overlay.StateLeft): 0}
	for _, m := range n.members.Members() {
		states[string(m.State)]++
	}
	for s, k := range states {
		gauge(ch, dMembers, float64(k), s)
	}
	ring := n.dht.Ring()
	gauge(ch, dRingJoined, b2f(ring.Joined))
	gauge(ch, dRingSuccs, float64(len(ring.Successors)))
	if k, err := n.store.Len(); err == nil {
		gauge(ch, dRecords, float64(k))
	}
	relayed := 0
	for _, r := range n.router.Routes() {
		id := r.Peer.String()
		if r.Direct.RTTms > 0 {
			gauge(ch, dRTT, r.Direct.RTTms/1000, id)
		}
		gauge(ch, dLoss, r.Direct.Loss, id)
		if r.Best.Latency.Via != "" {
			relayed++
		}
	}
	gauge(ch, dRelayed, float64(relayed))
	counter(ch, dRouteChg, float64(n.router.RouteChanges()))
	counter(ch, dForwarded, float64(n.router.Forwarded().SplicedBytes))
	sent, _ := n.router.Overhead()
	counter(ch, dProbeBytes, float64(sent))
	if nl := n.nat; nl != nil {
		a := nl.reach.Advert()
		gauge(ch, dReachable, b2f(a.Reachable))
		ri := reachOf(a)
		gauge(ch, dRole, 1, ri.Role, ri.Mapping)
		if nl.reserver != nil {
			gauge(ch, dReserv, float64(len(nl.reserver.Held())))
		} else {
			gauge(ch, dReserv, 0)
		}
		rs := nl.relay.Stats()
		counter(ch, dRelayBytes, float64(rs.Bytes))
		counter(ch, dCircuits, float64(rs.Circuits))
		ps := nl.punch.Stats()
		counter(ch, dPunches, float64(ps.Successes), "success")
		counter(ch, dPunches, float64(ps.Attempts-ps.Successes), "failure")
		counter(ch, dPunches, float64(ps.Refused), "refused")
	}
	for t, k := range n.connectionsByTransport() {
		gauge(ch, dConns, float64(k), t)
	}
	complete := map[bool]int{false: 0, true: 0}
	for _, st := range n.swarms.Swarms() {
		complete[st.Complete]++
		active := !st.Complete || st.Peers > 0
		if !active {
			continue // a finished swarm nobody fetches from adds no series
		}
		h := st.InfoHash
		counter(ch, dSwarmBytes, float64(st.Downloaded), h, "down")
		counter(ch, dSwarmBytes, float64(st.Uploaded), h, "up")
		counter(ch, dSwarmRed, float64(st.Redundant), h)
		gauge(ch, dSwarmPieces, float64(st.Have), h, "have")
		gauge(ch, dSwarmPieces, float64(st.Pieces), h, "total")
		gauge(ch, dSwarmPeers, float64(st.Peers), h)
	}
	gauge(ch, dSwarms, float64(complete[true]), "true")
	gauge(ch, dSwarms, float64(complete[false]), "false")
	if n.svc != nil {
		si := n.svc.list()
		side := func(name string, k int, each func(func(in, out, conns int64))) {
			var in, out, conns float64
			each(func(i, o, c int64) { in, out, conns = in+float64(i), out+float64(o), conns+float64(c) })
			counter(ch, dTunnelBytes, in, name, "in")
			counter(ch, dTunnelBytes, out, name, "out")
			counter(ch, dTunnelConns, conns, name)
			gauge(ch, dTunnels, float64(k), name)
		}
		side("expose", len(si.Expose), func(add func(in, out, conns int64)) {
			for _, e := range si.Expose {
				add(e.BytesIn, e.BytesOut, e.Conns)
			}
		})
		side("forward", len(si.Forward), func(add func(in, out, conns int64)) {
			for _, f := range si.Forward {
				add(f.BytesIn, f.BytesOut, f.Conns)
			}
		})
	}
	if n.mail != nil {
		counter(ch, dMail, float64(n.mail.sentCount.Load()), "sent")
		counter(ch, dMail, float64(n.mail.recvCount.Load()), "received")
	}
	jobs := map[string]int{"running": 0, "done": 0}
	targets := map[string]int{}
	var origin int64
	for _, j := range n.distributeViews() {
		origin += j.Report.OriginSent
		if j.Done {
			jobs["done"]++
			continue
		}
		jobs["running"]++
		for _, t := range j.Targets {
			targets[t.State]++
		}
	}
	for s, k := range jobs {
		gauge(ch, dDistJobs, float64(k), s)
	}
	for s, k := range targets {
		gauge(ch, dDistTargets, float64(k), s)
	}
	counter(ch, dDistSent, float64(origin))
	_ = n.host.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
		st := s.Stat()
		gauge(ch, dRcmgr, float64(st.NumConnsInbound+st.NumConnsOutbound), "connections")
		gauge(ch, dRcmgr, float64(st.NumStreamsInbound+st.NumStreamsOutbound), "streams")
		gauge(ch, dRcmgr, float64(st.NumFD), "fds")
		gauge(ch, dRcmgr, float64(st.Memory), "memory_bytes")
		return nil
	})
}

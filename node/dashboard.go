package node

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/peer-overlay/peer/dht/chord"
	"github.com/peer-overlay/peer/nat"
	"github.com/peer-overlay/peer/overlay"
	"github.com/peer-overlay/peer/swarm"
	"github.com/peer-overlay/peer/swarm/meta"
)

// DashboardInfo is what the dashboard draws, in one answer of
// GET /api/dashboard on the HTTP face: everything this peer knows of the
// group, read-only.
type DashboardInfo struct {
	ID    string `json:"id"`
	Time  string `json:"time"`
	Group string `json:"group"` // open or closed
	// Ring lists the members in ring order. Pos is the peer's Chord ID as
	// a fraction of the ring; its arc runs from the previous peer's Pos to
	// its own (the keys it owns).
	Ring []DashPeer `json:"ring"`
	// Matrix is the RON link table: Peers in ring order, and for each
	// pair the RTT (ms, -1 when not known) and loss that the row's peer
	// measured or reported.
	Matrix DashMatrix `json:"matrix"`
	// Paths are the one-hop paths this peer chose: the latency route to
	// each member that goes through another member.
	Paths  []DashPath     `json:"paths"`
	Swarms []swarm.Status `json:"swarms"`
	Jobs   []DashJob      `json:"jobs"`
}

// DashPeer is one member on the ring, with its NAT role.
type DashPeer struct {
	ID        string  `json:"id"`
	Short     string  `json:"short"`
	ChordID   string  `json:"chord_id"`
	Pos       float64 `json:"pos"`
	State     string  `json:"state"`
	Self      bool    `json:"self,omitempty"`
	Role      string  `json:"role"`    // member or supernode; "" when it advertises none
	Mapping   string  `json:"mapping"` // its NAT mapping
	Reachable bool    `json:"reachable"`
}

// DashMatrix is the RON link table.
type DashMatrix struct {
	Peers []string    `json:"peers"`
	RTTms [][]float64 `json:"rtt_ms"`
	Loss  [][]float64 `json:"loss"`
}

// DashPath is a chosen one-hop path from this peer.
type DashPath struct {
	To    string  `json:"to"`
	Via   string  `json:"via"`
	RTTms float64 `json:"rtt_ms"`
}

// DashJob is a distribute job as the dashboard shows it.
type DashJob struct {
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	State   string          `json:"state"`
	Targets []DashJobTarget `json:"targets"`
}

// DashJobTarget is one target of a distribute job.
type DashJobTarget struct {
	Peer    string  `json:"peer"`
	State   string  `json:"state"`
	Percent float64 `json:"percent"`
	Rate    float64 `json:"rate"`
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}

// ringPos is a Chord ID as a fraction of the ring.
func ringPos(id chord.ID) float64 {
	return float64(binary.BigEndian.Uint64(id[:8])) / math.Exp2(64)
}

func (n *Node) dashboard() DashboardInfo {
	out := DashboardInfo{ID: n.ID().String(), Time: time.Now().UTC().Format(time.RFC3339Nano),
		Ring: []DashPeer{}, Paths: []DashPath{}, Swarms: []swarm.Status{}, Jobs: []DashJob{}}
	out.Group = n.groupName()
	for _, m := range n.members.Members() {
		if m.State == overlay.StateDead || m.State == overlay.StateLeft {
			continue
		}
		id := chord.HashID([]byte(m.ID))
		dp := DashPeer{ID: m.ID.String(), Short: shortID(m.ID.String()), ChordID: id.String(), Pos: ringPos(id),
			State: string(m.State), Self: m.Self}
		var a nat.Advert
		ok := false
		if m.Self {
			a, ok = n.nat.reach.Advert(), true
		} else if v, has := m.Field(overlay.MetaTagReach); has {
			if d, err := nat.DecodeAdvert(v); err == nil {
				a, ok = d, true
			}
		}
		if ok {
			ri := reachOf(a)
			dp.Role, dp.Mapping, dp.Reachable = ri.Role, ri.Mapping, ri.Reachable
		}
		out.Ring = append(out.Ring, dp)
	}
	slices.SortFunc(out.Ring, func(a, b DashPeer) int {
		switch {
		case a.Pos < b.Pos:
			return -1
		case a.Pos > b.Pos:
			return 1
		}
		return 0
	})
	idx := map[peer.ID]int{}
	for i, p := range out.Ring {
		out.Matrix.Peers = append(out.Matrix.Peers, p.ID)
		if id, err := peer.Decode(p.ID); err == nil {
			idx[id] = i
		}
	}
	k := len(out.Ring)
	out.Matrix.RTTms = make([][]float64, k)
	out.Matrix.Loss = make([][]float64, k)
	for i := range k {
		out.Matrix.RTTms[i] = make([]float64, k)
		out.Matrix.Loss[i] = make([]float64, k)
		for j := range k {
			out.Matrix.RTTms[i][j] = -1
		}
	}
	for from, links := range n.router.Matrix() {
		i, ok := idx[from]
		if !ok {
			continue
		}
		for to, l := range links {
			j, ok := idx[to]
			if !ok || i == j {
				continue
			}
			if l.Down {
				out.Matrix.Loss[i][j] = 1
				continue
			}
			if l.RTTms > 0 {
				out.Matrix.RTTms[i][j] = math.Round(l.RTTms*1000) / 1000
			}
			out.Matrix.Loss[i][j] = l.Loss
		}
	}
	for _, r := range n.router.Routes() {
		if v := r.Best.Latency.Via; v != "" {
			out.Paths = append(out.Paths, DashPath{To: r.Peer.String(), Via: v.String(), RTTms: r.Best.Latency.RTTms})
		}
	}
	for _, st := range n.swarms.Swarms() {
		if s := n.swarms.Swarm(mustHash(st.InfoHash)); s != nil {
			st = s.StatusWithConns()
		}
		out.Swarms = append(out.Swarms, st)
	}
	for _, j := range n.distributeViews() {
		dj := DashJob{ID: j.ID, Name: j.Name, State: "running", Targets: []DashJobTarget{}}
		if j.Done {
			dj.State = "done"
			if !j.Report.OK {
				dj.State = "done with failures"
			}
		}
		for _, t := range j.Targets {
			dj.Targets = append(dj.Targets, DashJobTarget{Peer: t.Peer, State: t.State, Percent: t.Percent, Rate: t.Rate})
		}
		out.Jobs = append(out.Jobs, dj)
	}
	return out
}

func mustHash(s string) meta.InfoHash {
	h, _ := meta.ParseInfoHash(s)
	return h
}

// distributeViews lists this peer's distribute jobs, oldest first.
func (n *Node) distributeViews() []DistributeJob {
	if n.dist == nil {
		return nil
	}
	var out []DistributeJob
	for _, j := range n.dist.listJobs() {
		out = append(out, j.view())
	}
	return out
}

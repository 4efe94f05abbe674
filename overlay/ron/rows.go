package ron

// Rows: this peer's report of its own links, sent to the group, and the
// reports the other members send of theirs.

import (
	"math"
)

// OwnRow returns this peer's row when it should be sent to the group: when
// a link changed noticeably since the last row sent (went up or down, RTT by
// a quarter and 1 ms, loss by 5 points, throughput by half) or when the
// last one is RowRefreshMs old. ok is false when nothing needs sending.
func (c *Core) OwnRow(now int64) (Row, bool) {
	ri := c.RowInterval()
	due := c.sentRow == nil || now-c.rowAt >= max(c.cfg.RowRefreshMs, ri)
	if !due && !c.linksDirty && now-c.rowCheckedAt < rowRecheckMs {
		// No probe answered or lost since the last look, and no member
		// came or went: the links are as they were then. (The binding
		// calls this every 10 ms; building and comparing the row each
		// time cost a 64-member peer more than its probes did.)
		return Row{}, false
	}
	c.rowCheckedAt = now
	cur := map[string]LinkState{}
	for _, m := range c.members {
		if s := c.Link(now, m); s.RTTms > 0 || s.Down {
			cur[m] = s
		}
	}
	urgent := false // a link went down or came back: worth a row at once
	if !due {
		changes := len(cur) != len(c.sentRow)
		for m, s := range cur {
			old, ok := c.sentRow[m]
			if !ok || old.Down != s.Down {
				urgent = true
				break
			}
			changes = changes || changed(old, s)
		}
		// Other changes wait out the row interval, so that measurements
		// that wobble under load cannot flood the group with rows.
		due = urgent || changes && now-c.rowAt >= ri
		if !changes && !urgent {
			c.linksDirty = false // nothing to send until a link changes
		}
	}
	if !due || len(cur) == 0 {
		return Row{}, false
	}
	c.rowSeq++
	c.sentRow, c.rowAt = cur, now
	c.linksDirty = false
	return Row{Owner: c.self, Seq: c.rowSeq, Links: cur}, true
}

// RowSeq restarts this peer's row numbering above seq (after a restart, so
// that members who kept an old row take the new ones).
func (c *Core) RowSeq(seq uint64) { c.rowSeq = max(c.rowSeq, seq) }

// LastRowSeq is the sequence number of the last row OwnRow made.
func (c *Core) LastRowSeq() uint64 { return c.rowSeq }

// RowInterval is the least time between two rows of this peer, in ms:
// what keeps rows within RowBudgetBits as the group grows (a row carries
// an entry per member and goes to every member). Only a link going down or
// coming back is sent sooner.
func (c *Core) RowInterval() int64 {
	n := float64(len(c.members))
	rowBits := (rowHeaderBytes + rowEntryBytes*n) * 8
	return max(c.cfg.RowMinMs, int64(math.Ceil(rowBits*n/c.cfg.RowBudgetBits*1000)))
}

// Estimated bytes on the wire of a row: its header (owner, sequence,
// signature, framing) and each entry.
const (
	rowHeaderBytes = 190
	rowEntryBytes  = 16
)

// rowRecheckMs bounds how long OwnRow trusts that nothing changed: a
// passive throughput estimate ages out with time alone.
const rowRecheckMs = 1000

func (c *Core) rowStale() int64 { return max(c.cfg.RowStaleMs, 3*c.RowInterval()) }

func changed(a, b LinkState) bool {
	if a.Down != b.Down || (a.RTTms > 0) != (b.RTTms > 0) {
		return true
	}
	if d := math.Abs(a.RTTms - b.RTTms); d > 1 && d > a.RTTms/4 {
		return true
	}
	// The throughput estimate follows from RTT and loss: a change in it
	// that neither explains is noise (at sub-millisecond RTTs it swings
	// by several times from probe to probe), and the periodic refresh
	// carries it anyway.
	return math.Abs(a.Loss-b.Loss) >= 0.1
}

// ApplyRow keeps r, another member's report of its own links, if it is
// newer than the one held. The binding checks that r is signed by its
// owner before handing it in. It reports whether r was kept.
func (c *Core) ApplyRow(now int64, r Row) bool {
	if old, ok := c.rows[r.Owner]; ok && old.row.Seq >= r.Seq {
		return false
	}
	return c.ReapplyRow(now, r)
}

// ReapplyRow keeps r, received at (ms), even when a row of the same
// sequence number is held: the binding re-reads a row it kept when the
// group changes, since entries for members it did not know yet were left
// out the first time. An older row is still refused.
func (c *Core) ReapplyRow(at int64, r Row) bool {
	if r.Owner == c.self || c.links[r.Owner] == nil {
		return false // not a member
	}
	if old, ok := c.rows[r.Owner]; ok && old.row.Seq > r.Seq {
		return false
	}
	c.rows[r.Owner] = rowAt{row: r, at: at}
	return true
}

// Matrix is the link table as this peer knows it: its own links, measured,
// and the links each member reported in its last row that is not stale.
// The outer key is the reporting peer (self included), the inner one the
// peer at the other end.
func (c *Core) Matrix(now int64) map[string]map[string]LinkState {
	out := map[string]map[string]LinkState{}
	own := map[string]LinkState{}
	for _, m := range c.members {
		own[m] = c.Link(now, m)
	}
	out[c.self] = own
	for owner, ra := range c.rows {
		if now-ra.at > c.rowStale() {
			continue
		}
		links := make(map[string]LinkState, len(ra.row.Links))
		for k, v := range ra.row.Links {
			links[k] = v
		}
		out[owner] = links
	}
	return out
}

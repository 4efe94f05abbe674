package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/peer-overlay/peer/dht/record"
	"github.com/peer-overlay/peer/mail"
	"github.com/peer-overlay/peer/overlay"
)

// Store-and-forward messages: a message goes straight to a recipient that
// is up; otherwise the replicas of its mailbox key hold it until it comes
// back and collects it (see package mail).

const (
	mailFile = "mail.db"
	// collectEvery: how often a peer looks in its mailbox, besides at once
	// after it joins the ring.
	collectEvery = 10 * time.Second
	// outboxEvery: how often a peer checks its messages left in mailboxes
	// for acknowledgements and expiry.
	outboxEvery = 15 * time.Second
	// directTimeout bounds a direct delivery before the mailbox is used.
	directTimeout = 3 * time.Second
	// mailAccept: replicas that must hold a message before a send counts
	// as accepted (fewer only when the mailbox has fewer replicas).
	mailAccept = 2
	// heldWait: how long a message that came before its predecessor is
	// held back, for the predecessor to come from another replica.
	heldWait = 30 * time.Second
	// gapGiveUp: how long after that a missing message is taken as lost,
	// and what follows it acknowledged.
	gapGiveUp = 10 * time.Minute
	// Per-sender limit on direct deliveries.
	mailDirectRate  = 200
	mailDirectBurst = 1000
)

// errBadSend marks a send refused for what the caller gave.
var errBadSend = errors.New("refused")

type mailer struct {
	n    *Node
	priv crypto.PrivKey
	self peer.ID
	box  *mail.Box
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // collect now

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when the inbox grows
	sending map[peer.ID]*sync.Mutex
	limits  map[peer.ID]*rate.Limiter
	warned  map[peer.ID]bool

	sentCount, recvCount atomic.Int64 // messages accepted for sending, and new ones delivered here
}

func (n *Node) startMail(priv crypto.PrivKey) error {
	box, err := mail.OpenBox(filepath.Join(n.home, mailFile))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &mailer{n: n, priv: priv, self: n.host.ID(), box: box, log: n.log.With("layer", "mail"),
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), changed: make(chan struct{}),
		sending: map[peer.ID]*sync.Mutex{}, limits: map[peer.ID]*rate.Limiter{}, warned: map[peer.ID]bool{}}
	n.mail = m
	n.host.SetStreamHandler(mail.Protocol, m.handle)
	n.closers.Push("mail", func() error {
		n.host.RemoveStreamHandler(mail.Protocol)
		cancel()
		m.wg.Wait()
		return box.Close()
	})
	m.wg.Add(2)
	go func() { defer m.wg.Done(); m.collectLoop() }()
	go func() { defer m.wg.Done(); m.outboxLoop() }()
	return nil
}

// SendResult says what became of a message.
type SendResult struct {
	ID string `json:"id"`
	To string `json:"to"`
	// Via is "direct" (the recipient took it) or "mailbox" (replicas
	// of its mailbox hold it: accepted, to be delivered when it returns).
	Via     string   `json:"via"`
	Holders []string `json:"holders,omitempty"`
	// DirectErr says why a message for a peer that seemed up went to the
	// mailbox.
	DirectErr string  `json:"direct_error,omitempty"`
	Millis    float64 `json:"ms"`
}

func (m *mailer) sendLock(to peer.ID) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.sending[to]
	if l == nil {
		l = &sync.Mutex{}
		m.sending[to] = l
	}
	return l
}

// send delivers msg to to, or leaves it in its mailbox. One sender's
// messages to one recipient go one at a time, so that each is taken
// before the next is sent: the recipient's order check relies on it.
func (m *mailer) send(ctx context.Context, to peer.ID, msg mail.Message, ttl time.Duration) (SendResult, error) {
	start := time.Now()
	if err := msg.Check(); err != nil {
		return SendResult{}, fmt.Errorf("%w: %w", errBadSend, err)
	}
	if ttl <= 0 {
		ttl = mail.DefaultTTL
	}
	if ttl > mail.MaxTTL {
		return SendResult{}, fmt.Errorf("%w: a lifetime of %v, limit %v", errBadSend, ttl, mail.MaxTTL)
	}
	if _, err := to.ExtractPublicKey(); err != nil {
		return SendResult{}, fmt.Errorf("%w: %s holds no public key to seal to", errBadSend, to)
	}
	l := m.sendLock(to)
	l.Lock()
	defer l.Unlock()
	now := time.Now()
	seq, prev, err := m.box.Next(to, now)
	if err != nil {
		return SendResult{}, err
	}
	// A message that goes nowhere gives its Seq back, so that the next
	// does not name as its predecessor one the recipient will never get.
	unsend := func(err error) (SendResult, error) {
		if e := m.box.Unsend(to, seq, prev); e != nil {
			m.log.Warn("giving back a message's seq", "err", e)
		}
		return SendResult{}, err
	}
	rec, err := mail.Seal(m.priv, to, msg, seq, prev, now, now.Add(ttl))
	if err != nil {
		return unsend(err)
	}
	res := SendResult{ID: mail.ID(m.self, seq), To: to.String()}
	done := func() (SendResult, error) {
		m.sentCount.Add(1)
		res.Millis = float64(time.Since(start).Microseconds()) / 1000
		return res, nil
	}
	if to == m.self {
		if err := m.take([]*record.Record{rec}, "direct", [][]string{{m.hop("delivered to itself")}}); err != nil {
			return SendResult{}, err
		}
		res.Via = "direct"
		return done()
	}
	if m.up(to) {
		err := m.deliver(ctx, to, rec)
		if err == nil {
			res.Via = "direct"
			return done()
		}
		var ref *mail.Refused
		if errors.As(err, &ref) {
			return unsend(err) // the recipient said no: the mailbox would not change that
		}
		res.DirectErr = err.Error()
	}
	held, asked, err := m.n.dht.StoreMail(ctx, rec, mailAccept)
	if err != nil {
		return unsend(fmt.Errorf("mail: %s is not reachable and its mailbox did not take the message: %w", to, err))
	}
	for _, h := range held {
		res.Holders = append(res.Holders, h.String())
	}
	if need := min(mailAccept, asked); len(held) < need {
		return SendResult{}, fmt.Errorf("mail: not accepted: %d of the mailbox's %d replicas took the message, %d must (the one that took it may still deliver it)", len(held), asked, need)
	}
	if err := m.box.AddPending(mail.Pending{ID: res.ID, To: to.String(), Seq: seq, Sent: now, Expires: now.Add(ttl), Holders: res.Holders}); err != nil {
		return SendResult{}, err
	}
	res.Via = "mailbox"
	return done()
}

// up says whether membership has to as alive.
func (m *mailer) up(to peer.ID) bool {
	for _, mb := range m.n.members.Members() {
		if mb.ID == to {
			return mb.State == overlay.StateAlive
		}
	}
	return false
}

// deliver hands rec to its recipient over a stream.
func (m *mailer) deliver(ctx context.Context, to peer.ID, rec *record.Record) error {
	ctx, cancel := context.WithTimeout(ctx, directTimeout)
	defer cancel()
	s, err := m.n.overlay.OpenStream(ctx, to, mail.Protocol, overlay.ClassLatency)
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := mail.WriteDelivery(s, rec); err != nil {
		s.Reset()
		return err
	}
	_ = s.CloseWrite()
	if err := mail.ReadReply(bufio.NewReader(s)); err != nil {
		s.Reset()
		return err
	}
	return nil
}

// handle takes a message its sender delivers directly.
func (m *mailer) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(2 * directTimeout))
	remote := s.Conn().RemotePeer()
	rec, err := mail.ReadDelivery(bufio.NewReader(s))
	if err != nil {
		m.refuse(remote, err)
		s.Reset()
		return
	}
	err = m.admit(remote, rec)
	if err == nil {
		how := "directly"
		if _, e := s.Conn().RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); e == nil {
			how = "through a relay"
		}
		err = m.take([]*record.Record{rec}, "direct", [][]string{{m.hop(fmt.Sprintf("received %s from %s", how, remote))}})
	}
	if err != nil {
		m.refuse(remote, err)
	}
	_ = mail.WriteReply(s, err)
}

// admit checks that a direct delivery comes from its sender, within the
// sender's rate.
func (m *mailer) admit(remote peer.ID, rec *record.Record) error {
	if from, err := rec.Publisher(); err != nil || from != remote {
		return fmt.Errorf("a message signed by %s handed over by %s: a direct delivery comes from its sender", from, remote)
	}
	m.mu.Lock()
	lim := m.limits[remote]
	if lim == nil {
		if len(m.limits) > 4096 {
			clear(m.limits)
		}
		lim = rate.NewLimiter(mailDirectRate, mailDirectBurst)
		m.limits[remote] = lim
	}
	m.mu.Unlock()
	if !lim.Allow() {
		return fmt.Errorf("too many messages from %s (limit %d a second)", remote, mailDirectRate)
	}
	return nil
}

// refuse logs a bad delivery, once per peer.
func (m *mailer) refuse(p peer.ID, err error) {
	m.mu.Lock()
	seen := m.warned[p]
	m.warned[p] = true
	m.mu.Unlock()
	if !seen {
		m.log.Warn("refused a message", "peer", p, "err", err)
	}
}

// hop is a trace line of this peer.
func (m *mailer) hop(what string) string {
	return fmt.Sprintf("%s by %s at %s", what, m.self, time.Now().UTC().Format(time.RFC3339Nano))
}

// take opens recs, each with the trace lines after the sender's, and
// files them in the inbox in one write. Those that do not open are
// refused and logged; the rest are filed.
func (m *mailer) take(recs []*record.Record, via string, traces [][]string) error {
	now := time.Now()
	var as []mail.Arrival
	var firstErr error
	for i, rec := range recs {
		d, err := mail.Open(m.priv, rec, now)
		if err != nil {
			if from, e := rec.Publisher(); e == nil {
				m.refuse(from, err)
			}
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		lines := append([]string{fmt.Sprintf("sealed by %s at %s", d.From, d.Sent.UTC().Format(time.RFC3339Nano))}, traces[i]...)
		as = append(as, mail.Arrival{D: d, Via: via, Trace: lines})
	}
	if len(as) > 0 {
		fresh, held, err := m.box.Deliver(as, now)
		if err != nil {
			return err
		}
		m.recvCount.Add(int64(fresh))
		if fresh > held {
			m.grew()
		}
		if held > 0 && via == "direct" {
			// Its predecessor went to the mailbox: look there now.
			select {
			case m.kick <- struct{}{}:
			default:
			}
		}
	}
	return firstErr
}

// grew wakes those waiting for the inbox to grow.
func (m *mailer) grew() {
	m.mu.Lock()
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// collectLoop looks in this peer's mailbox once it is in the group, then
// every collectEvery.
func (m *mailer) collectLoop() {
	wait := 250 * time.Millisecond
	var lastWarn time.Time
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case <-time.After(wait):
		}
		// The mailbox's replicas come from the member list, so a peer
		// that is back in the group collects before it has rejoined the
		// ring (which, right after peers died, can take seconds).
		if m.n.members.NumAlive() < 2 && !m.n.dht.Ring().Joined {
			wait = 250 * time.Millisecond
			continue
		}
		if err := m.collect(); err != nil {
			if time.Since(lastWarn) > collectEvery {
				lastWarn = time.Now()
				m.log.Info("collecting mail failed; retrying", "err", err)
			}
			wait = time.Second
			continue
		}
		wait = collectEvery
	}
}

// collect takes what the mailbox holds and acknowledges it.
func (m *mailer) collect() error {
	ctx, cancel := context.WithTimeout(m.ctx, 20*time.Second)
	defer cancel()
	box := record.MailboxKey(m.self)
	for range 100 { // batches of at most 256 a replica
		start := time.Now()
		copies, err := m.n.dht.Mailbox(ctx, box, record.KindMail)
		if err != nil {
			return err
		}
		fetched := time.Since(start)
		// A replica that returns messages acknowledged before missed the
		// acknowledgement (it was down, or took the messages from another
		// replica since): it is sent again, to every replica. Else those
		// messages would fill every batch and hold back the senders after
		// them in the mailbox.
		ackedBefore, err := m.box.AckedUpTo()
		if err != nil {
			return err
		}
		stale := map[peer.ID]uint64{}
		recs := make([]*record.Record, 0, len(copies))
		traces := make([][]string, 0, len(copies))
		for _, c := range copies {
			if from, err := c.Record.Publisher(); err == nil && c.Record.Seq <= ackedBefore[from] {
				stale[from] = ackedBefore[from]
			}
			var holders []string
			for _, h := range c.Holders {
				holders = append(holders, h.String())
			}
			recs = append(recs, c.Record)
			traces = append(traces, []string{"held in its mailbox by " + strings.Join(holders, ", "), m.hop("collected")})
		}
		if err := m.take(recs, "mailbox", traces); err != nil {
			m.log.Debug("some mail did not open", "err", err)
		}
		if n, err := m.box.ReleaseHeld(time.Now(), heldWait); err == nil && n > 0 {
			m.log.Info("let out messages whose predecessor has not come", "messages", n, "waited", heldWait.String())
			m.grew()
		}
		if n, err := m.box.GiveUpGaps(time.Now(), gapGiveUp); err == nil && n > 0 {
			m.log.Warn("took messages that never came as lost", "senders", n, "after", gapGiveUp.String())
		}
		acked, err := m.ack(ctx)
		if err != nil {
			return err
		}
		for from, seq := range stale {
			if err := m.publishAck(ctx, from, seq, 1<<20); err != nil {
				return err
			}
			acked++
		}
		if len(copies) > 0 {
			m.log.Info("collected mail", "messages", len(copies), "fetch", fetched.Round(time.Millisecond).String(),
				"took", time.Since(start).Round(time.Millisecond).String())
		}
		if len(copies) < 256 || acked == 0 {
			return nil
		}
	}
	return nil
}

// ack tells the mailbox's replicas what came.
func (m *mailer) ack(ctx context.Context) (int, error) {
	todo, err := m.box.ToAck()
	if err != nil {
		return 0, err
	}
	n := 0
	for from, seq := range todo {
		// One replica holding it is progress; the ring carries it to
		// the others.
		if err := m.publishAck(ctx, from, seq, 1); err != nil {
			return n, err
		}
		if err := m.box.Acked(from, seq); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// publishAck acknowledges from's messages up to seq on the mailbox's
// replicas, waiting until enough of them hold it (or all answered).
func (m *mailer) publishAck(ctx context.Context, from peer.ID, seq uint64, enough int) error {
	rec, err := record.New(record.KindMailAck, record.MailboxKey(m.self), []byte(from), seq, time.Now().Add(mail.MaxTTL), m.priv)
	if err != nil {
		return err
	}
	_, _, err = m.n.dht.StoreMail(ctx, rec, enough)
	return err
}

// outboxLoop follows the messages left in mailboxes: acknowledged ones
// are forgotten, expired ones noticed.
func (m *mailer) outboxLoop() {
	for {
		wait := outboxEvery
		if ps, err := m.box.Pending(); err == nil {
			for _, p := range ps {
				wait = min(wait, max(100*time.Millisecond, time.Until(p.Expires)+100*time.Millisecond))
			}
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := m.followOutbox(); err != nil {
			m.log.Debug("following sent mail", "err", err)
		}
	}
}

func (m *mailer) followOutbox() error {
	ps, err := m.box.Pending()
	if err != nil || len(ps) == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	acks := map[string]uint64{}
	for _, p := range ps {
		if _, ok := acks[p.To]; ok {
			continue
		}
		acks[p.To] = 0
		to, err := peer.Decode(p.To)
		if err != nil {
			continue
		}
		cs, err := m.n.dht.Mailbox(ctx, record.MailboxKey(to), record.KindMailAck)
		if err != nil {
			continue
		}
		for _, c := range cs {
			if peer.ID(c.Record.Value) == m.self {
				acks[p.To] = c.Record.Seq
			}
		}
	}
	now := time.Now()
	for _, p := range ps {
		switch {
		case p.Seq <= acks[p.To]:
			if err := m.box.DropPending(p); err != nil {
				return err
			}
		case now.After(p.Expires):
			text := fmt.Sprintf("not delivered: the message %s to %s, sent %s, expired at %s without being collected",
				p.ID, p.To, p.Sent.UTC().Format(time.RFC3339), p.Expires.UTC().Format(time.RFC3339))
			if _, err := m.box.Notice(p, text, now); err != nil {
				return err
			}
			m.log.Warn("a message was not delivered", "id", p.ID, "to", p.To, "expired", p.Expires)
			m.grew()
			if err := m.box.DropPending(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// inbox returns entries after after, waiting up to wait for one to come.
func (m *mailer) inbox(ctx context.Context, after uint64, wait time.Duration) ([]mail.Entry, error) {
	for {
		m.mu.Lock()
		ch := m.changed
		m.mu.Unlock()
		es, err := m.box.List(after, 1000)
		if err != nil || len(es) > 0 || wait <= 0 {
			return es, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ch:
			t.Stop()
			es, err := m.box.List(after, 1000)
			return es, err
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			t.Stop()
			return nil, nil
		case <-m.ctx.Done():
			t.Stop()
			return nil, nil
		}
	}
}

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peer-overlay/peer/mail"
	"github.com/peer-overlay/peer/node"
)

// Store-and-forward messages with real processes: a message to a peer
// that is up goes directly; messages to a peer that is down are held by
// its mailbox's replicas, survive two of them killed, and reach it once
// it is back, each once and in order; one that expires comes back to its
// sender as a notice; bad messages are refused.
func TestMessagesDirectAndHeld(t *testing.T) {
	t.Parallel()
	c := NewCluster(t, 6)
	Eventually(t, convergeTimeout, pollInterval, c.Expect(nil))
	Eventually(t, convergeTimeout, pollInterval, idealRing(c.Peers))
	sender, other, rcpt := c.Peers[1], c.Peers[2], c.Peers[3]
	rcptID := mustID(t, rcpt)
	ctx := context.Background()

	// 1. Online: direct, with the CLI.
	code, out, errOut := runPeer(t, "send", rcptID, "hello there", "--home", sender.Home, "--json")
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	var sent node.SendResult
	if err := json.Unmarshal([]byte(out), &sent); err != nil || sent.Via != "direct" {
		t.Fatalf("send to a peer that is up answered %s (%v), want via direct", out, err)
	}
	in := inbox(t, rcpt)
	if len(in) != 1 || in[0].Text != "hello there" || in[0].From != mustID(t, sender) || in[0].ID != sent.ID || len(in[0].Trace) < 2 {
		t.Fatalf("the recipient's inbox after a direct send: %+v", in)
	}
	code, out, _ = runPeer(t, "inbox", "--trace", "--home", rcpt.Home)
	if code != 0 || !strings.Contains(out, "hello there") || !strings.Contains(out, "sealed by") {
		t.Fatalf("peer inbox --trace: exit %d: %s", code, out)
	}

	// The time a direct send takes, from the sender's API.
	sc, err := sender.api()
	if err != nil {
		t.Fatal(err)
	}
	// A send that the recipient does not answer within 3 s (a loaded
	// machine) goes to its mailbox instead, as designed; the figure is
	// taken over the direct ones.
	var ms []float64
	for i := range 50 {
		r, err := sc.Send(ctx, node.SendRequest{To: rcptID, Text: fmt.Sprintf("online %d", i)})
		if err != nil {
			t.Fatalf("send %d to a peer that is up: %v", i, err)
		}
		if r.Via == "direct" {
			ms = append(ms, r.Millis)
		} else {
			t.Logf("send %d to a peer that is up went to its mailbox: %s", i, r.DirectErr)
		}
	}
	if len(ms) < 25 {
		t.Fatalf("only %d of 50 sends to a peer that is up went directly", len(ms))
	}
	slices.Sort(ms)
	t.Logf("FIGURE message to an online peer: p50 %.2f ms, p99 %.2f ms over %d direct sends", ms[len(ms)/2], ms[len(ms)*99/100], len(ms))
	const online = 51
	Eventually(t, 30*time.Second, pollInterval, func() error {
		if n := len(inbox(t, rcpt)); n != online {
			return fmt.Errorf("the recipient holds %d of the %d messages sent while it was up", n, online)
		}
		return nil
	})

	// 2. Bad input: refused, nothing sent.
	big := filepath.Join(t.TempDir(), "big.bin")
	if err := os.WriteFile(big, make([]byte, mail.MaxBody+1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"send", rcptID},                // nothing to send
		{"send", rcptID, "--file", big}, // too large
		{"send", "Not_A_Name", "hi"},    // neither a peer ID nor a name
		{"send", rcptID, "x", "--ttl", "-1s"},
	} {
		code, _, errOut := runPeer(t, append(args, "--home", sender.Home)...)
		if code == 0 {
			t.Errorf("%v: exit 0, want a refusal", args)
		} else if errOut == "" {
			t.Errorf("%v: refused without a word", args)
		}
	}
	if got := inbox(t, rcpt); len(got) != online {
		t.Fatalf("after the refused sends the inbox holds %d messages, want %d", len(got), online)
	}

	// 3. Offline: held by the mailbox.
	rcpt.Stop()
	// Offline is what counts here: "left", or "dead" when the leave was
	// not heard (seen once in CI, on a graceful stop).
	Eventually(t, 30*time.Second, pollInterval, c.Expect(map[*Peer]string{rcpt: "gone"}))
	oc, err := other.api()
	if err != nil {
		t.Fatal(err)
	}
	const held = 30
	var want []string
	for i := range held {
		r, err := sc.Send(ctx, node.SendRequest{To: rcptID, Text: fmt.Sprintf("held %d", i)})
		if err != nil {
			t.Fatalf("send %d to a stopped peer: %v", i, err)
		}
		if r.Via != "mailbox" || len(r.Holders) < 2 {
			t.Fatalf("send %d to a stopped peer: %+v, want held by at least 2 replicas", i, r)
		}
		want = append(want, r.ID)
	}
	if r, err := oc.Send(ctx, node.SendRequest{To: rcptID, Text: "from another"}); err != nil || r.Via != "mailbox" {
		t.Fatalf("a second sender: %+v %v", r, err)
	}
	// A message that expires before its recipient returns comes back to
	// its sender as a notice.
	exp, err := oc.Send(ctx, node.SendRequest{To: rcptID, Text: "too late", TTL: "2s"})
	if err != nil {
		t.Fatal(err)
	}
	// Two replicas die (neither sender).
	var killed []*Peer
	for _, p := range c.Peers {
		if p != sender && p != other && p != rcpt && p != c.Peers[0] && len(killed) < 2 {
			p.Kill9()
			killed = append(killed, p)
		}
	}
	Eventually(t, 30*time.Second, pollInterval, func() error {
		for _, e := range inbox(t, other) {
			if e.Via == "notice" && e.ID == exp.ID {
				return nil
			}
		}
		return fmt.Errorf("no notice of the expired message %s yet", exp.ID)
	})
	// The notice came, so the message has expired: the recipient must
	// not get it.
	back := time.Now()
	rcpt.Restart()
	var got []mail.Entry
	Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		got = inbox(t, rcpt)
		if len(got) < online+held+1 {
			return fmt.Errorf("%d of %d messages in the inbox", len(got), online+held+1)
		}
		return nil
	})
	t.Logf("FIGURE all %d held messages in the inbox %.2f s after the recipient restarted (with 2 replicas killed)", held+1, time.Since(back).Seconds())
	var fromSender []string
	var lastSeq uint64
	for _, e := range got[online:] {
		if e.Text == "too late" {
			t.Errorf("an expired message was delivered: %+v", e)
		}
		if e.From == mustID(t, sender) {
			fromSender = append(fromSender, e.ID)
			if e.Seq <= lastSeq {
				t.Errorf("message %s out of order: seq %d after %d", e.ID, e.Seq, lastSeq)
			}
			lastSeq = e.Seq
			if e.Via != "mailbox" || !slices.ContainsFunc(e.Trace, func(l string) bool { return strings.HasPrefix(l, "held in its mailbox by") }) {
				t.Errorf("message %s: via %s, trace %q", e.ID, e.Via, e.Trace)
			}
		}
	}
	if !slices.Equal(fromSender, want) {
		t.Fatalf("the sender's messages arrived as %d IDs, want the %d sent, in order", len(fromSender), len(want))
	}
	// Acknowledged: the sender forgets them, and a restart of the
	// recipient brings none again.
	for _, p := range killed {
		p.Restart()
	}
	// One more message, left in the mailbox while the recipient is down:
	// once it is in, the recipient has collected after its restart, and
	// that collection must have brought nothing else.
	rcpt.Stop()
	Eventually(t, 30*time.Second, pollInterval, c.Expect(map[*Peer]string{rcpt: "gone"}))
	marker, err := sc.Send(ctx, node.SendRequest{To: rcptID, Text: "marker"})
	if err != nil || marker.Via != "mailbox" {
		t.Fatalf("a message to the stopped recipient: %+v %v", marker, err)
	}
	rcpt.Restart()
	var again []mail.Entry
	Eventually(t, 30*time.Second, pollInterval, func() error {
		again = inbox(t, rcpt)
		if !slices.ContainsFunc(again, func(e mail.Entry) bool { return e.ID == marker.ID }) {
			return fmt.Errorf("the message sent while it was down again is not in (%d messages)", len(again))
		}
		return nil
	})
	if len(again) != len(got)+1 {
		t.Fatalf("after another restart the inbox holds %d messages, want the %d before and the one sent meanwhile", len(again), len(got))
	}
}

func inbox(t *testing.T, p *Peer) []mail.Entry {
	t.Helper()
	cl, err := p.api()
	if err != nil {
		t.Fatal(err)
	}
	// The API answers a page at a time.
	var out []mail.Entry
	var after uint64
	for {
		in, err := cl.Inbox(context.Background(), after, 0)
		if err != nil {
			t.Fatalf("%s: inbox: %v", p.Name, err)
		}
		if len(in.Messages) == 0 {
			return out
		}
		out = append(out, in.Messages...)
		after = in.Messages[len(in.Messages)-1].N
	}
}

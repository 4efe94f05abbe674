package nat

import "time"

// ActionKind is what the pair policy tells the binding to do about one
// remote peer.
type ActionKind int

// The actions.
const (
	// Direct: one side is public, or a punched connection is up. Use the
	// direct connection, or open one: dial the remote if it is public; if
	// we are the public one, the remote's dial (or DCUtR's connection
	// reversal over the relay) brings it. Never punch.
	Direct ActionKind = iota
	// Punch: start a hole punch now (and call PairHistory.Attempt).
	Punch
	// RelayOnly: both ends are hard (or unknown), a punch would not work:
	// use the relay and do not punch while the kinds stay the same.
	RelayOnly
	// Wait: use the relay for now and ask again at Action.Until, when a
	// punch may be tried.
	Wait
)

// String names the action for logs.
func (a ActionKind) String() string {
	switch a {
	case Direct:
		return "direct"
	case Punch:
		return "punch"
	case RelayOnly:
		return "relay-only"
	case Wait:
		return "wait"
	default:
		return "unknown"
	}
}

// Action is the pair policy's decision.
type Action struct {
	Kind  ActionKind
	Until time.Time // for Wait: when a punch may be tried; zero otherwise
}

// Limits of hole punching per pair. Failed punches cost both NATs state
// and both peers traffic, so they are few and spaced.
const (
	// PunchWindow is the sliding window MaxPunches counts in.
	PunchWindow = 10 * time.Minute
	// MaxPunches is the most punch attempts for one pair within any
	// PunchWindow.
	MaxPunches = 3
	// EasyRetry1 is the wait after the first attempt of an easy–easy
	// pair.
	EasyRetry1 = 30 * time.Second
	// EasyRetry2 is the wait after the second attempt of an easy–easy
	// pair; after the third it waits until the oldest attempt leaves the
	// window.
	EasyRetry2 = 2 * time.Minute
	// MixedRetry is the wait after a punch between an easy and a hard (or
	// unknown) end; it doubles with every further consecutive failure,
	// up to MixedRetryMax. Such punches rarely work, so one is tried, then
	// the relay carries the pair.
	MixedRetry = PunchWindow
	// MixedRetryMax caps MixedRetry's doubling.
	MixedRetryMax = time.Hour
)

// PairHistory is what the binding remembers about punching one remote
// peer. The zero value is a pair never punched. Its methods record
// events; Decide reads it and never changes it.
type PairHistory struct {
	// Attempts holds the start times of the latest punch attempts, oldest
	// first, at most MaxPunches of them.
	Attempts []time.Time
	// Failures counts consecutive failed punches; a success resets it.
	Failures int
	// Punched: a punched direct connection is up.
	Punched bool
}

// Attempt records a punch attempt started at now.
func (h *PairHistory) Attempt(now time.Time) {
	h.Attempts = append(h.Attempts, now)
	if n := len(h.Attempts); n > MaxPunches {
		h.Attempts = append([]time.Time(nil), h.Attempts[n-MaxPunches:]...)
	}
}

// Failed records that the latest punch attempt failed.
func (h *PairHistory) Failed() { h.Failures++ }

// Succeeded records that a punch made a direct connection: no more
// attempts until Lost.
func (h *PairHistory) Succeeded() { h.Punched, h.Failures = true, 0 }

// Lost records that the punched connection is gone. The attempts made
// before still count against the window.
func (h *PairHistory) Lost() { h.Punched = false }

// Decide says what to do about the pair of this peer (local) and a remote
// one, given its history, at now. The rules:
//
//   - either end Public, or a punched connection up: Direct;
//   - Unknown is treated as Hard for punching (it may still dial a public
//     remote, above);
//   - Hard with Hard: RelayOnly;
//   - Easy with Easy: Punch, retried after EasyRetry1, then EasyRetry2;
//   - Easy with Hard: Punch once, then Wait (the relay carries the pair)
//     for MixedRetry, doubling per consecutive failure up to MixedRetryMax;
//   - and never more than MaxPunches attempts in any PunchWindow: past
//     that, Wait until the oldest attempt leaves the window.
//
// A Wait's Until is never before now; Decide asked again at or after it
// gives Punch.
func Decide(local, remote Kind, h PairHistory, now time.Time) Action {
	if local == Public || remote == Public || h.Punched {
		return Action{Kind: Direct}
	}
	easyL, easyR := local == Easy, remote == Easy
	if !easyL && !easyR {
		return Action{Kind: RelayOnly}
	}
	// Only attempts within the window count.
	var recent []time.Time
	for _, t := range h.Attempts {
		if now.Sub(t) < PunchWindow {
			recent = append(recent, t)
		}
	}
	next := now
	if len(recent) >= MaxPunches {
		next = recent[len(recent)-MaxPunches].Add(PunchWindow)
	}
	if n := len(h.Attempts); n > 0 {
		last := h.Attempts[n-1]
		var wait time.Duration
		switch {
		case easyL && easyR && len(recent) == 1:
			wait = EasyRetry1
		case easyL && easyR && len(recent) > 1:
			wait = EasyRetry2
		case easyL && easyR:
			wait = 0 // the last attempt is older than the window
		default:
			wait = MixedRetry
			for i := 1; i < h.Failures && wait < MixedRetryMax; i++ {
				wait *= 2
			}
			wait = min(wait, MixedRetryMax)
		}
		next = later(next, last.Add(wait))
	}
	if next.After(now) {
		return Action{Kind: Wait, Until: next}
	}
	return Action{Kind: Punch}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

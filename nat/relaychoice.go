package nat

import (
	"cmp"
	"slices"
	"time"
)

// Relay is an elected supernode as a NATed peer sees it when choosing
// where to hold circuit relay reservations.
type Relay struct {
	ID  string
	RTT time.Duration // measured round trip; 0 (or less) when not measured yet
}

// MinReservations is how many supernodes a NATed peer holds reservations
// on, unless fewer are elected: with two, losing one leaves the peer
// reachable while it reserves on another.
const MinReservations = 2

// RefreshMargin is how long before a reservation expires it is refreshed
// at the latest.
const RefreshMargin = 30 * time.Second

// byRTT orders relays: measured ones by RTT, then unmeasured ones, ties
// by ID.
func byRTT(a, b Relay) int {
	ka, kb := a.RTT > 0, b.RTT > 0
	switch {
	case ka && kb && a.RTT != b.RTT:
		return cmp.Compare(a.RTT, b.RTT)
	case ka != kb:
		if ka {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.ID, b.ID)
}

// ChooseRelays returns, sorted by ID, the supernodes to hold reservations
// on: want of them (at least MinReservations; all of them if fewer are
// elected). Reservations held now (current) are kept while their
// supernode stays elected, so that a better RTT elsewhere does not churn
// them; the free places go to the lowest RTT first, unmeasured ones last,
// ties to the lower ID. If more are held than wanted, the best by RTT are
// kept. The caller leaves itself out of supernodes. An ID listed twice
// counts once, with its best RTT.
func ChooseRelays(supernodes []Relay, current []string, want int) []string {
	want = max(want, MinReservations)
	byID := map[string]Relay{}
	for _, r := range supernodes {
		if old, seen := byID[r.ID]; !seen || byRTT(r, old) < 0 {
			byID[r.ID] = r
		}
	}
	held := map[string]bool{}
	var kept, free []Relay
	for _, id := range current {
		if r, ok := byID[id]; ok && !held[id] {
			held[id] = true
			kept = append(kept, r)
		}
	}
	for id, r := range byID {
		if !held[id] {
			free = append(free, r)
		}
	}
	slices.SortFunc(kept, byRTT)
	slices.SortFunc(free, byRTT)
	chosen := kept[:min(len(kept), want)]
	chosen = append(chosen, free[:min(len(free), want-len(chosen))]...)
	ids := make([]string, len(chosen))
	for i, r := range chosen {
		ids[i] = r.ID
	}
	slices.Sort(ids)
	return ids
}

// RefreshAt says when to refresh a reservation that expires at expiry:
// after two thirds of the time left, but at least RefreshMargin before
// expiry, and never before now (an expired or nearly expired reservation
// is refreshed at once). A one-hour reservation made now is refreshed in
// 40 minutes.
func RefreshAt(expiry, now time.Time) time.Time {
	left := expiry.Sub(now)
	if left <= 0 {
		return now
	}
	at := now.Add(left * 2 / 3)
	if latest := expiry.Add(-RefreshMargin); at.After(latest) {
		at = latest
	}
	if at.Before(now) {
		return now
	}
	return at
}

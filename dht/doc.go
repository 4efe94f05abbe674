// Package dht is the Chord ring's binding: it carries the deterministic
// core of dht/chord over /peer/chord/1.0.0 streams opened with the
// overlay, feeds it membership events (a member memberlist declares failed
// or gone leaves successor lists and fingers at once), and keeps the
// replicated, signed records of dht/record: each on the owner of its key
// and the next 7 peers, pushed to successors when they change, handed over
// on a graceful leave, and read from every replica, newest sequence first,
// with older copies repaired. Lookups, kv puts and gets and the swarm's
// provider records go through it.
//
// A peer restarted with its identity may still be listed by the ring; the
// core keeps it out of successor lists until it has joined again (its
// empty state is no list to adopt). A restarted peer without bootstrap
// peers whose store holds records joins through a member, or through a
// peer that asked it something, before it would found a ring of its own.
package dht

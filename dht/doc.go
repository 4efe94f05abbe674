// Package dht will own the Chord ring: 160-bit identifiers, the successor
// list, fingers, stabilization and rectify (with Zave's corrections),
// lookups, and the replicated, signed key/value and provider records that
// the swarm uses to find who has a file.
//
// The ring logic will be a deterministic core (messages and ticks in,
// messages and events out) so that thousands of nodes can be simulated in
// one process; a thin binding will carry it over overlay streams.
package dht

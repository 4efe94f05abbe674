// Package nat will own reachability: STUN mapping discovery, the supernode
// role, relay reservations, hole punching, keepalives and the netcheck
// report.
package nat

// Package swarm distributes files as BitTorrent v1 does, over overlay
// streams: the Manager serves /peer/swarm/1.0.0, runs the one uploader and
// the global rate limits, and holds a Swarm per file. A Swarm owns its
// connections, request scheduling (rarest-first picks by swarm/picker,
// requests moved off silent peers, an even spread near the end, a bounded
// endgame), choking rounds (swarm/choker, with extra slots while upload
// capacity sits idle), super-seeding for the first seed, verification and
// bans, storage (preallocated, written once verified) and saved progress
// for resume. Manifests and magnets live in swarm/meta, the wire format in
// swarm/wire.
package swarm

// Package nat owns reachability: how this peer can be reached through
// NATs, and the extra paths (relayed circuits, punched connections) it
// hands the overlay.
//
// Today it holds the deterministic cores, each a pure function or a small
// state type with no goroutines, sockets, wall clock or global random
// source (time comes in as an argument), tested on scripted inputs:
//
//   - the mapping classifier (Classify, Classifier): from the STUN answers
//     of the supernodes, is this peer Public, behind an Easy
//     (endpoint-independent) or a Hard (endpoint-dependent) mapping, or
//     Unknown yet, and does its NAT preserve ports;
//   - supernode election (Elect, Seats, Eligible, Score): which reachable,
//     well-resourced members take the supernode role, computed alike by
//     every member from membership metadata, with hysteresis;
//   - the pair policy (Decide, PairHistory): for a local and a remote
//     kind, dial direct, punch, wait, or stay on the relay, with at most
//     MaxPunches attempts per pair per PunchWindow;
//   - relay choice (ChooseRelays, RefreshAt): which supernodes to hold
//     reservations on, and when to refresh them.
//
// The STUN wire code lives in nat/stunx: the padded Binding request, the
// answer parser, the filter for the shared QUIC socket, and the
// rate-limited, non-amplifying Responder supernodes run.
//
// The bindings do the I/O around these cores: Service sends STUN from the
// libp2p QUIC socket (SharedSocket, from quicreuse) and answers it; Advert
// is what a peer gossips in membership metadata; Reach runs the election on
// the group's adverts; RelayService is a supernode's circuit relay v2, for
// members only; Reserver keeps a NATed peer's reservations; Puncher is
// DCUtR's address filter and tracer, by the pair policy. CountAsPublic is
// the test bed's switch. The node wires them (node/nat.go).
package nat

// Package overlay owns how peers reach each other: membership and failure
// detection (hashicorp/memberlist carried over libp2p streams, so there is
// one port and everything is encrypted), and OpenStream, the single way the
// layers above open a stream to a peer. Later it also owns RON link-state
// probing and one-hop path choice; callers of OpenStream will not change.
package overlay

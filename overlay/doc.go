// Package overlay owns how peers reach each other: membership and failure
// detection (hashicorp/memberlist carried over libp2p streams, so there is
// one port and everything is encrypted); the RON router, which probes every
// member of the group, spreads signed link-state rows, chooses a direct or
// one-hop path per traffic class (the core is overlay/ron), and recovers
// connections left stuck by a cut link; one-hop forwarding, with the two
// ends secured by Noise (overlay/onehop: wire, client, server); ping; the
// path providers (paths.go); and OpenStream, the one way the layers above
// open a stream to a peer, which tries the providers' paths in order.
package overlay

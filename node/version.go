package node

// Version is the peer's version; release builds set it with
// -ldflags "-X github.com/peer-overlay/peer/node.Version=...".
var Version = "0.1.0-dev"

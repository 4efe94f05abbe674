// Package integration runs real `peer` daemons on 127.0.0.1 and checks what
// they do together: joining, failure detection, restart and leave. The
// tests build the binary once (see TestMain) and start every peer as a
// child process with its own home, so they exercise the same code paths a
// user's daemon does, control API and exit codes included.
//
// A failed test shows the end of every peer's log. PEER_KEEP_LOGS=DIR
// keeps the whole logs of every cluster, passing or not, in
// DIR/<test name>/peer-N.log.
package integration

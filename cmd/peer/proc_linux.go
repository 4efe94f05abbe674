package main

import "syscall"

// spinProcAttr has a busy child of --contend die with its parent, even if
// the bench is killed.
func spinProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// peerProcAttr puts a devnet peer in a process group of its own, so that
// a terminal's Ctrl-C reaches devnet, which stops the peers in order; and
// stops the peer should devnet be killed.
func peerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

//go:build !linux

package main

import "syscall"

// spinProcAttr is nothing off Linux, which alone can have a child die with
// its parent: a busy child outlives a bench that is killed rather than
// stopped.
func spinProcAttr() *syscall.SysProcAttr { return nil }

// peerProcAttr is nothing off Linux: devnet peers share its process group,
// so a terminal's Ctrl-C reaches them too (each stops on it), and they
// outlive a devnet that is killed rather than stopped.
func peerProcAttr() *syscall.SysProcAttr { return nil }

//go:build !linux && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package main

// isTerminalFd reports false: no terminal check here, so output is plain.
func isTerminalFd(uintptr) bool { return false }

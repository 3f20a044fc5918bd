//go:build !linux

package main

// monoNow is 0 off Linux: the guest is Linux; this only keeps the program
// building elsewhere.
func monoNow() int64 { return 0 }

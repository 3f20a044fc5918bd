//go:build unix

package server

import "syscall"

type syscallStat = syscall.Stat_t

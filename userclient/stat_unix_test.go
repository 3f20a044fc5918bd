//go:build unix

package userclient

import "syscall"

type syscallStat = syscall.Stat_t

//go:build unix

package server

import (
	"syscall"
	"time"
)

// processCPU is the CPU time of the whole process (every thread: the
// server's, the clients', the floor's), which unlike wall time does not
// count the time the process waits for a CPU another process holds.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

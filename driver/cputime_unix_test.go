//go:build unix

package driver_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time of the whole process (every thread: the
// caller, the termination worker, the mail pool), which unlike wall time
// does not count the time the process waits for a CPU another process
// holds.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

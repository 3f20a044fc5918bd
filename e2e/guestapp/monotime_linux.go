package main

import "golang.org/x/sys/unix"

// monoNow is CLOCK_MONOTONIC in nanoseconds (the clock the e2e agent
// stamps uevents with and drvctl monitor prints).
func monoNow() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

//go:build !unix

package driver_test

import "time"

func processCPU() (time.Duration, bool) { return 0, false }

//go:build !unix

package cputime

import "time"

// Process is not available here: false.
func Process() (time.Duration, bool) { return 0, false }

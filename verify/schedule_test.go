package verify_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/verify"
)

// TestScheduleDirect: direct (an application process on a direct call
// channel) implies procs, is written after it, and takes no value.
func TestScheduleDirect(t *testing.T) {
	for _, c := range []struct {
		in, out       string
		procs, direct bool
	}{
		{"io=1ms", "faults= teardown= io=1ms", false, false},
		{"io=1ms procs", "faults= teardown= io=1ms procs", true, false},
		{"io=1ms direct", "faults= teardown= io=1ms procs direct", true, true},
		{"direct procs io=1ms", "faults= teardown= io=1ms procs direct", true, true},
		{"faults=app-kill@call teardown=terminate io=2ms direct seed=9", "faults=app-kill@call teardown=terminate io=2ms procs direct seed=9", true, true},
	} {
		s, err := verify.ParseSchedule(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.procs, s.Procs, c.in)
		require.Equal(t, c.direct, s.Direct, c.in)
		require.Equal(t, c.out, s.String(), c.in)
	}
	// Set from Go without Procs, it is still written as a process.
	require.Equal(t, "faults= teardown= io=0s procs direct", verify.Schedule{Direct: true}.String())
	for _, bad := range []string{"direct=1", "direct=", "direct direct"} {
		_, err := verify.ParseSchedule(bad)
		require.True(t, errors.Is(err, verify.ErrBadSchedule), "%q: %v", bad, err)
	}
}

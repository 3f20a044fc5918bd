package driver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTermPhaseOrder checks that the phases and phase 3 steps are ordered
// as the contract in DESIGN.md (the worker compares them) and that every
// value has a name.
func TestTermPhaseOrder(t *testing.T) {
	phases := []struct {
		p    termPhase
		name string
	}{
		{phase1Marked, "phase 1: marked inactive"},
		{phase2Will, "phase 2: willTerminate"},
		{phase2Did, "phase 2: didTerminate"},
		{phase3Finish, "phase 3: stop, detach, free"},
		{phaseDone, "done"},
		{phaseDone + 1, "termPhase(5)"},
	}
	for i, tc := range phases {
		require.Equal(t, tc.name, tc.p.String())
		if i > 0 {
			require.Less(t, phases[i-1].p, tc.p)
		}
	}
	steps := []struct {
		s    finishStep
		name string
	}{
		{finishCancel, "cancel jobs"},
		{finishDrain, "drain jobs and calls"},
		{finishDetachClients, "detach clients"},
		{finishStop, "stop"},
		{finishDetach, "release resources and detach"},
		{finishDone, "done"},
		{finishDone + 1, "finishStep(6)"},
	}
	for i, tc := range steps {
		require.Equal(t, tc.name, tc.s.String())
		if i > 0 {
			require.Less(t, steps[i-1].s, tc.s)
		}
	}
}

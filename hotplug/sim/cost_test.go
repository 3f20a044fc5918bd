package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Expanding a scenario costs at most maxScenarioWork steps and iterations
// (plus what its lines cost to read), whatever the repeat counts.
func TestScenarioCostIsBounded(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"empty repeat of the largest count", "repeat 2147483647\nend\n", ""},
		{"nested empty repeats", strings.Repeat("repeat 2147483647\n", 4) + strings.Repeat("end\n", 4), ""},
		{"huge count over a step", "repeat 2147483647\nwait 0s\nend\n", "more than 524288 steps"},
		{"product of counts", "repeat 1000\nrepeat 1000\nwait 0s\nend\nend\n", "more than 524288 steps"},
		{"expansions thrown away by repeat 0", strings.Repeat("repeat 0\nrepeat 100000\nwait 0s\nend\nend\n", 30), "costs more than 2097152 steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, work, err := parseScenarioWork("t.scn", strings.NewReader(tc.in), false)
			t.Logf("%v, work %d", time.Since(start), work)
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, ErrBadScenario)
				require.ErrorContains(t, err, tc.err)
			}
			require.LessOrEqual(t, work, maxScenarioWork+1+maxScenarioSteps)
		})
	}
}

// The cost fuzz target: no input makes expansion do more work than the
// bound plus what reading its lines costs.
func FuzzScenarioCost(f *testing.F) {
	f.Add("repeat 2147483647\nend\n")
	f.Add("repeat 3\nrepeat 0\nwait 0s\nend\nend\n")
	f.Add(strings.Repeat("repeat 0\nrepeat 100000\nwait 0s\nend\nend\n", 3))
	f.Add("repeat 65536\nwait 0s\nwait 0s\nend\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, work, _ := parseScenarioWork("fuzz.scn", strings.NewReader(s), false)
		lines := strings.Count(s, "\n") + 1
		if bound := maxScenarioWork + maxScenarioSteps + lines; work > bound {
			t.Fatalf("expansion did %d units of work, bound %d", work, bound)
		}
	})
}

package lifecycletest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

type ev = driver.LifecycleEvent

func trace(steps ...ev) []ev {
	for i := range steps {
		steps[i].Seq = uint64(i + 1)
	}
	return steps
}

// P=1 is a provider, C=2 its client.
func attach(c, p uint64) ev            { return ev{ServiceID: c, ProviderID: p, Step: driver.StepAttach} }
func detach(c, p uint64) ev            { return ev{ServiceID: c, ProviderID: p, Step: driver.StepDetach} }
func step(id uint64, s driver.Step) ev { return ev{ServiceID: id, Step: s} }

func good() []ev {
	return []ev{
		attach(1, 9), attach(2, 1),
		step(1, driver.StepTerminate), step(2, driver.StepTerminate),
		step(2, driver.StepStop), detach(2, 1), step(2, driver.StepFree),
		step(1, driver.StepStop), detach(1, 9), step(1, driver.StepFree),
	}
}

func TestValidate(t *testing.T) {
	require.NoError(t, lifecycletest.Validate(trace(good()...), true))

	swap := func(i, j int) []ev {
		g := good()
		g[i], g[j] = g[j], g[i]
		return g
	}
	tests := []struct {
		name   string
		events []ev
		want   string
	}{
		{"stop before terminate", swap(3, 4), "stop before terminate"},
		{"provider stops before its client detaches", swap(5, 7), "stop while client #2 is still attached"},
		{"detach before stop", swap(4, 5), "detach after terminate but before stop"},
		{"free before detach", swap(5, 6), "free while attached to #1"},
		{"event after free", append(good(), step(2, driver.StepWillTerminate)), "after free"},
		{"terminated twice", append(good()[:4], append([]ev{step(2, driver.StepTerminate)}, good()[4:]...)...), "terminated twice"},
		{"stopped twice", append(good()[:5], append([]ev{step(2, driver.StepStop)}, good()[5:]...)...), "stopped twice"},
		{"detach without attach", append(good()[:2], detach(3, 1)), "detach from #1 without attach"},
		{"free with references", append(good()[:9], ev{ServiceID: 1, Step: driver.StepFree, Refs: 2}), "free with 2 references"},
		{"never freed", good()[:8], `terminated but never freed`},
		{"never stopped", good()[:4], `terminated but never stopped`},
		{"provider named after free", append(good(), attach(5, 2)), "names provider #2 after its free"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := lifecycletest.Validate(trace(tc.events...), true)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	// Partial traces are fine without the completeness rule.
	require.NoError(t, lifecycletest.Validate(trace(good()[:8]...), false))
}

func TestRecorder(t *testing.T) {
	r := driver.NewRegistry()
	rec := lifecycletest.Record(t, r)
	nub := r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	require.NoError(t, nub.TerminateSync(t.Context()))
	require.NoError(t, r.Close(t.Context()))
	require.Equal(t, []string{"publish n", "attach n<-root", "terminate n", "willTerminate n", "didTerminate n",
		"stop n", "detach n<-root", "free n", "terminate root", "willTerminate root", "didTerminate root",
		"stop root", "free root"}, rec.Steps())
	rec.Check(t)
}

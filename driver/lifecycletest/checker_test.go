package lifecycletest_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
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

// TestValidateCauses: a service terminated directly has its cause as root
// cause; one reached by cascade (CauseProviderTerminated) has a provider
// terminated before it with the same root cause; no other step has a cause.
func TestValidateCauses(t *testing.T) {
	term := func(id uint64, c, root driver.Cause) ev {
		return ev{ServiceID: id, Step: driver.StepTerminate, Cause: c, RootCause: root}
	}
	withTerms := func(p, c ev) []ev {
		g := good()
		g[2], g[3] = p, c
		return g
	}
	const (
		unplug   = driver.CauseUnplug
		unload   = driver.CauseUnload
		provider = driver.CauseProviderTerminated
	)
	tests := []struct {
		name   string
		events []ev
		want   string // "" for a valid trace
	}{
		{"cascade", withTerms(term(1, unplug, unplug), term(2, provider, unplug)), ""},
		{"both direct", withTerms(term(1, unload, unload), term(2, unplug, unplug)), ""},
		{"no causes (older traces)", good(), ""},
		{"direct with another root", withTerms(term(1, unplug, unload), term(2, provider, unload)), `terminated directly (cause "unplug") but with root cause "unload"`},
		{"cascade from the wrong root", withTerms(term(1, unplug, unplug), term(2, provider, unload)), `cause "provider", but no provider it is attached to was terminated before it with root cause "unload"`},
		{"cascade before its provider", withTerms(term(2, provider, unplug), term(1, unplug, unplug)), `no provider it is attached to was terminated before it`},
		{"cause on another step", append(good()[:4], ev{ServiceID: 2, Step: driver.StepStop, Cause: unplug}), `carries a termination cause ("unplug", root "unknown") on a stop step`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := lifecycletest.Validate(trace(tc.events...), true)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	// A trace that does not start at the registry's first event may have
	// missed the provider's termination: the cascade is not checked.
	late := trace(attach(2, 1), term(2, provider, unplug), step(2, driver.StepStop), detach(2, 1), step(2, driver.StepFree))
	require.Error(t, lifecycletest.Validate(late, false))
	for i := range late {
		late[i].Seq += 10
	}
	require.NoError(t, lifecycletest.Validate(late, false))
}

func TestRecorder(t *testing.T) {
	leaktest.Check(t)
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

// TestValidateJoinedLate: a trace recorded from a registry that was
// already running may open after an attachment; its detach is no error
// then, but every other rule still holds.
func TestValidateJoinedLate(t *testing.T) {
	late := trace(step(2, driver.StepTerminate), step(2, driver.StepStop), detach(2, 1), step(2, driver.StepFree))
	for i := range late {
		late[i].Seq += 40
	}
	require.NoError(t, lifecycletest.Validate(late, true))
	bad := trace(step(2, driver.StepTerminate), detach(2, 1), step(2, driver.StepStop), step(2, driver.StepFree))
	for i := range bad {
		bad[i].Seq += 40
	}
	require.ErrorContains(t, lifecycletest.Validate(bad, true), "detach after terminate but before stop")
}

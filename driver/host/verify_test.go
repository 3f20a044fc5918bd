package host_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/host"
)

// TestKillDriver: KillDriver SIGKILLs the instance's process, which is a
// crash like any other; a service without a process says so.
func TestKillDriver(t *testing.T) {
	e := newEnv(t)
	m := e.loadBundle("counter", "")
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)
	pid := e.pid(m.Name)
	err := e.h.KillDriver(nub)
	require.ErrorIs(t, err, host.ErrNoProcess)
	require.NoError(t, e.h.KillDriver(inst))
	require.Eventually(t, func() bool { return dead(pid) }, 5*time.Second, time.Millisecond)
	select {
	case <-inst.Done():
	case <-e.ctx.Done():
		t.Fatalf("the killed driver's instance was not freed: %v", inst.Blockers())
	}
	require.Equal(t, 1, e.status(m.Name).TotalCrashes)
	require.Contains(t, e.status(m.Name).LastError, "killed by signal")
	err = e.h.KillDriver(inst)
	var oe *host.OpError
	require.True(t, errors.As(err, &oe), "%v", err)
	require.ErrorIs(t, err, host.ErrNoProcess)
	nub.TerminateWith(driver.CauseUnplug)
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.finish()
}

// TestLeakReport: with TraceDrivers, a Go SDK driver process reports at
// stop what its code left alive — here its provider, retained in Start
// and never released — with the line that retained it (protocol 1.1).
func TestLeakReport(t *testing.T) {
	e := newEnv(t, func(c *host.Config) { c.TraceDrivers = true })
	m := e.loadBundle("leakprovider", "")
	nub := e.plug("1-1:1.0")
	inst := e.instance(nub)
	require.Empty(t, e.h.DriverLeaks(m.Name))
	nub.TerminateWith(driver.CauseUnplug)
	select {
	case <-inst.Done():
	case <-e.ctx.Done():
		t.Fatalf("instance not freed: %v", inst.Blockers())
	}
	rs := e.h.DriverLeaks(m.Name)
	require.Len(t, rs, 1)
	r := rs[0]
	require.Equal(t, m.Name, r.Driver)
	require.Equal(t, inst.ID(), r.Service)
	require.Positive(t, r.PID)
	require.Equal(t, 1, r.Leaks.Objects)
	require.Contains(t, r.Leaks.Text, "HIDDevice")
	require.NotNil(t, r.Leaks.Culprit)
	require.Equal(t, "github.com/drvkit/drvkit/driver/host_test.(*leakProvider).Start", r.Leaks.Culprit.Func)
	require.True(t, strings.HasSuffix(r.Leaks.Culprit.File, "/driver/host/main_test.go"), r.Leaks.Culprit.File)
	require.NotEmpty(t, r.Leaks.Stack)
	require.Contains(t, e.logs.String(), "driver process left objects alive at stop")
	require.Zero(t, e.status(m.Name).TotalCrashes, "a leak is not a crash")
	require.NoError(t, e.r.Unload(e.ctx, m.Name))
	e.finish()
}

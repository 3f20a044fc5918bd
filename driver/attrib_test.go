package driver_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// The IOKit idiom the leak reports must get right: a service retains its
// provider with itself as the tag. The registry's own attachment reference
// used to share that tag, the user's release paired with the framework's
// retain, and every report blamed attachLocked.

//go:noinline
func keepProvider(self *driver.Service) { self.Providers()[0].TaggedRetain(self) }

//go:noinline
func keepProviderFromClient(self *driver.Service) { self.Providers()[0].TaggedRetain(self) }

//go:noinline
func clientHoldsDriver(self *driver.Service) { self.Providers()[0].TaggedRetain(self) }

//go:noinline
func driverHoldsClient(self *driver.Service) { self.TaggedRetain(self.Providers()[0]) }

// userHandler is a user client (or driver) whose Start runs start.
type userHandler struct{ start func(*driver.Service) }

func (h userHandler) Start(_ context.Context, s *driver.Service) error {
	h.start(s)
	return nil
}
func (userHandler) Stop(*driver.Service) {}

// requireBlames checks that a report names fn with its file and line and
// never blames drvkit's attachment code: no stack leads with it ("retained
// at …"). A live, attached service's full stacks legitimately pass through
// attachLocked; they lead with the program's call of Publish.
func requireBlames(t *testing.T, what, report, fn string) {
	t.Helper()
	require.Regexp(t, `at driver_test\.`+fn+` attrib_test\.go:\d+`, report, "%s does not name %s:\n%s", what, fn, report)
	require.NotRegexp(t, `at \S*attachLocked`, report, "%s blames drvkit:\n%s", what, report)
}

// capturingTB runs leaktest.Check's cleanup on demand and keeps its
// failure, so that a test can look at the failure a leak would cause.
type capturingTB struct {
	testing.TB
	cleanups []func()
	failure  strings.Builder
}

func (c *capturingTB) Helper()                           {}
func (c *capturingTB) Cleanup(f func())                  { c.cleanups = append(c.cleanups, f) }
func (c *capturingTB) Errorf(format string, args ...any) { fmt.Fprintf(&c.failure, format, args...) }
func (c *capturingTB) finish() string {
	for i := len(c.cleanups) - 1; i >= 0; i-- {
		c.cleanups[i]()
	}
	return c.failure.String()
}

func leakCheck(t *testing.T) *capturingTB {
	c := &capturingTB{TB: t}
	leaktest.Check(c, leaktest.Timeout(50*time.Millisecond), leaktest.ObjectsOnly())
	return c
}

func reportText(t *testing.T, objs ...*refcount.Object) string {
	var b bytes.Buffer
	require.NoError(t, refcount.NewReport(objs).WriteText(&b))
	return b.String()
}

func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func TestSelfTagDriverBlamesUser(t *testing.T) {
	e := newEnv(t)
	lc := leakCheck(t)
	var inst *driver.Service
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "keeper", Class: "KeeperDriver", New: func() driver.Driver {
		return userHandler{start: func(s *driver.Service) { inst = s; keepProvider(s) }}
	}}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))

	// The driver detaches and goes; the nub it kept cannot.
	err := nub.TerminateSync(shortCtx(t))
	require.ErrorIs(t, err, driver.ErrBlocked)
	requireBlames(t, "TerminateSync", err.Error(), "keepProvider")
	require.Contains(t, err.Error(), "held by "+inst.Class())
	waitFreed(t, inst)

	requireBlames(t, "the report", reportText(t, nub.RefObject()), "keepProvider")
	found := false
	for _, g := range refcount.Leaks() {
		if strings.HasSuffix(g.Site.Func, "driver_test.keepProvider") {
			found = true
			require.Contains(t, g.Site.File, "attrib_test.go")
			require.Equal(t, []string{"Nub"}, g.Classes)
		}
		require.NotContains(t, g.Site.Func, "attachLocked")
	}
	require.True(t, found, "Leaks() has no group for keepProvider")

	chains := refcount.WhyAlive(nub.RefObject())
	require.Len(t, chains, 1)
	require.Equal(t, inst.RefObject().String()+" (freed)", chains[0].Root)
	require.True(t, strings.HasSuffix(chains[0].Site.Func, "driver_test.keepProvider"), "%+v", chains[0].Site)

	failure := lc.finish()
	requireBlames(t, "leaktest.Check", failure, "keepProvider")
	require.NotContains(t, failure, "attachLocked", "the nub is detached: nothing of the attachment is left")

	nub.TaggedRelease(inst) // the fix: the driver lets go of its provider
	waitFreed(t, nub)
	e.quiet()
}

func TestSelfTagUserClientBlamesUser(t *testing.T) {
	e := newEnv(t)
	var drv, uc *driver.Service
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "served", Class: "ServedDriver", New: func() driver.Driver {
		return userHandler{start: func(s *driver.Service) { drv = s }}
	}}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	lc := leakCheck(t)
	var err error
	uc, err = e.r.AttachClient(drv, "KeeperClient", "app", userHandler{start: keepProviderFromClient})
	require.NoError(t, err)

	// Unload terminates the driver and its client; the client's reference
	// keeps the driver.
	err = e.r.Unload(shortCtx(t), "served")
	require.ErrorIs(t, err, driver.ErrHasInstances)
	requireBlames(t, "Unload", err.Error(), "keepProviderFromClient")
	waitFreed(t, uc)

	bl := drv.Blockers()
	require.NotEmpty(t, bl)
	var blText strings.Builder
	for _, b := range bl {
		blText.WriteString(b.What + "\n" + strings.Join(b.Stacks, "\n"))
	}
	requireBlames(t, "Blockers", blText.String(), "keepProviderFromClient")
	requireBlames(t, "the report", reportText(t, drv.RefObject()), "keepProviderFromClient")
	chains := refcount.WhyAlive(drv.RefObject())
	require.Len(t, chains, 1)
	require.True(t, strings.HasSuffix(chains[0].Site.Func, "driver_test.keepProviderFromClient"), "%+v", chains[0].Site)
	requireBlames(t, "leaktest.Check", lc.finish(), "keepProviderFromClient")

	drv.TaggedRelease(uc)
	waitFreed(t, drv)
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// A driver and its user client that retain each other: once terminated,
// they are a cycle, reported with both user stacks.
func TestDriverUserClientCycleNamesBothStacks(t *testing.T) {
	e := newEnv(t)
	var drv *driver.Service
	require.NoError(t, e.r.RegisterPersonality(driver.Personality{Name: "cyc", Class: "CycDriver", New: func() driver.Driver {
		return userHandler{start: func(s *driver.Service) { drv = s }}
	}}))
	nub := e.r.NewNub("Nub", "n", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	uc, err := e.r.AttachClient(drv, "CycClient", "app", userHandler{start: func(s *driver.Service) {
		clientHoldsDriver(s)
		driverHoldsClient(s)
	}})
	require.NoError(t, err)

	err = nub.TerminateSync(shortCtx(t))
	require.ErrorIs(t, err, driver.ErrBlocked)
	require.Regexp(t, `driver_test\.clientHoldsDriver attrib_test\.go:\d+`, err.Error())

	rep := refcount.NewReport([]*refcount.Object{drv.RefObject(), uc.RefObject()})
	require.Len(t, rep.Cycles, 1)
	require.Len(t, rep.Cycles[0].Edges, 2)
	text := reportText(t, drv.RefObject(), uc.RefObject())
	require.Contains(t, text, "cycles (held only by each other)")
	requireBlames(t, "cycle", text, "clientHoldsDriver")
	requireBlames(t, "cycle", text, "driverHoldsClient")

	drv.TaggedRelease(uc)
	uc.TaggedRelease(drv)
	waitFreed(t, drv, uc, nub)
	e.quiet()
}

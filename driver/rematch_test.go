package driver_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

type quietDriver struct{}

func (quietDriver) Start(context.Context, *driver.Service) error { return nil }
func (quietDriver) Stop(*driver.Service)                         {}

// TestRematch: once a nub's driver instance is gone (terminated by itself,
// as a crashed out-of-process driver is), Rematch starts a new one on the
// nub; it does nothing for a nub that has its driver, or that is
// terminated, or that was never published.
func TestRematch(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	rec := lifecycletest.Record(t, r)
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "d", Class: "D", ProviderClass: "N",
		New: func() driver.Driver { return quietDriver{} }}))
	nub := r.NewNub("N", "n1", driver.Properties{})
	require.NoError(t, r.Publish(nil, nub))
	first := nub.Clients()[0]

	r.Rematch(nub) // it has its driver
	require.Len(t, nub.Clients(), 1)

	require.NoError(t, first.TerminateSyncWith(ctx, driver.CauseCrashed))
	require.Empty(t, nub.Clients())
	require.False(t, nub.State().Matched)
	r.Rematch(nub)
	cl := nub.Clients()
	require.Len(t, cl, 1)
	require.NotEqual(t, first.ID(), cl[0].ID())
	require.True(t, cl[0].State().Started)
	require.True(t, nub.State().Matched)

	unpublished := r.NewNub("N", "n2", driver.Properties{})
	r.Rematch(unpublished)
	require.Empty(t, unpublished.Clients())
	require.NoError(t, unpublished.TerminateSync(ctx))

	require.NoError(t, nub.TerminateSyncWith(ctx, driver.CauseUnplug))
	r.Rematch(nub)
	require.Empty(t, nub.Clients())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

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

// stuck runs a job that ignores cancellation until release is closed:
// termination waits for it before Stop, so the instance stays attached.
type stuck struct{ release chan struct{} }

func (d stuck) Start(_ context.Context, s *driver.Service) error {
	return s.Submit(driver.Job{Key: "stuck", Run: func(context.Context) error { <-d.release; return nil }})
}
func (stuck) Stop(*driver.Service) {}

// TestReregisterAfterRefusedUnload: an unload refused because an instance
// cannot stop yet keeps the personalities readable (Personalities), and
// registering them again does not start a second instance on the nub whose
// instance is still being torn down; a new nub gets one.
func TestReregisterAfterRefusedUnload(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	release := make(chan struct{})
	rec := lifecycletest.Record(t, r)
	p := driver.Personality{Name: "d", Class: "D", ProviderClass: "N",
		Match: []driver.Match{driver.MatchValue("k", 1)}, New: func() driver.Driver { return stuck{release} }}
	require.NoError(t, r.RegisterPersonality(p))
	nub := r.NewNub("N", "n1", driver.NewProperties(map[string]any{"k": 1}))
	require.NoError(t, r.Publish(nil, nub))
	inst := nub.Clients()[0]

	saved := r.Personalities("d")
	require.Len(t, saved, 1)
	require.Empty(t, r.Personalities("other"))
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	err := r.Unload(short, "d")
	cancelShort()
	require.ErrorIs(t, err, driver.ErrHasInstances)
	require.Empty(t, r.Personalities("d"), "Unload unregistered it")

	for _, sp := range saved {
		require.NoError(t, r.RegisterPersonality(sp))
	}
	require.Len(t, nub.Clients(), 1, "no second instance beside the one being torn down")
	require.False(t, nub.Clients()[0].State().Active)

	nub2 := r.NewNub("N", "n2", driver.NewProperties(map[string]any{"k": 1}))
	require.NoError(t, r.Publish(nil, nub2))
	require.Len(t, nub2.Clients(), 1)
	require.True(t, nub2.Clients()[0].State().Active)

	close(release)
	<-inst.Done()
	require.Empty(t, nub.Clients(), "not rematched: unload terminated it")
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

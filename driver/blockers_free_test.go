package driver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// A service whose free is still running when TerminateSync's deadline
// passes is reported as such, not as "nothing found". Found by the
// reliability explorer, seed 11013 (hang@free+2: the blocker report of a
// TerminateSync was empty while the service's free hung).
func TestBlockersWhileFreeing(t *testing.T) {
	leaktest.Check(t)
	r := driver.NewRegistry()
	rec := lifecycletest.Record(t, r)
	in := faultinject.New()
	nub := r.NewNub("SlowFree", "slow", driver.Properties{})
	in.MustAdd(faultinject.Rule{Point: faultinject.Free,
		Match:  func(s faultinject.Site) bool { return s.Target.ID() == nub.ID() },
		Action: faultinject.Delay(300 * time.Millisecond)})
	un, err := in.Install()
	require.NoError(t, err)
	defer un()
	require.NoError(t, r.Publish(nil, nub))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = nub.TerminateSync(ctx)
	var be *driver.BlockedError
	require.True(t, errors.As(err, &be), "got %v", err)
	var whats []string
	for _, b := range be.Blockers {
		whats = append(whats, b.What)
	}
	require.Contains(t, strings.Join(whats, "\n"), "being freed", "the report says the free is running")

	<-nub.Done()
	require.NoError(t, r.Close(context.Background()))
	rec.Check(t)
}

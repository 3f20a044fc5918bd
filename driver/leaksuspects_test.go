package driver_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

type suspectHolder struct{}

// TestLeakSuspects: an active service is alive by right and never listed;
// a terminated one that someone still holds is, until it is let go.
func TestLeakSuspects(t *testing.T) {
	e := newEnv(t)
	alive := e.r.NewNub("Device", "alive", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, alive))
	held := e.r.NewNub("Device", "held", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, held))
	held.TaggedRetain(suspectHolder{})
	held.Terminate()
	require.Eventually(t, func() bool { return held.State().Stopped }, 10*time.Second, time.Millisecond)

	ids := func() []uint64 {
		var out []uint64
		for _, o := range e.r.LeakSuspects() {
			out = append(out, o.ID())
		}
		return out
	}
	got := ids()
	require.Contains(t, got, held.ID())
	require.NotContains(t, got, alive.ID())
	require.NotContains(t, got, e.r.Root().ID())
	var all []uint64
	for _, o := range refcount.LiveObjects() {
		all = append(all, o.ID())
	}
	require.Subset(t, all, got, "suspects are live traced objects")

	held.TaggedRelease(suspectHolder{})
	waitFreed(t, held)
	require.NotContains(t, ids(), held.ID())
	e.quiet()
}

type sessionTag struct{}

// TestAttachClientHeld: the caller's reference is taken with the attach,
// so a termination racing it cannot free the client under the caller; it
// is freed once the caller lets go.
func TestAttachClientHeld(t *testing.T) {
	e := newEnv(t)
	nub := e.r.NewNub("Device", "dev", driver.Properties{})
	require.NoError(t, e.r.Publish(nil, nub))
	_, err := e.r.AttachClientHeld(nub, "UserClient", "uc", driver.Properties{}, &testDriver{log: e.log}, nil)
	require.Error(t, err, "a nil tag holds nothing")
	uc, err := e.r.AttachClientHeld(nub, "UserClient", "uc", driver.Properties{}, struct{}{}, sessionTag{})
	require.NoError(t, err)
	nub.Terminate()
	require.Eventually(t, func() bool { return uc.State().Stopped }, 10*time.Second, time.Millisecond)
	select {
	case <-uc.Done():
		t.Fatal("freed while the caller holds it")
	case <-time.After(50 * time.Millisecond):
	}
	uc.TaggedRelease(sessionTag{})
	waitFreed(t, uc, nub)

	// Refused on a terminated provider: nothing is held.
	_, err = e.r.AttachClientHeld(nub, "UserClient", "late", driver.Properties{}, struct{}{}, sessionTag{})
	require.ErrorIs(t, err, driver.ErrNotActive)
	e.quiet()
}

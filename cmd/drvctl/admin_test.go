package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

type holderTag struct{}

func (holderTag) String() string { return "test holder" }

func findClass(t *testing.T, r *driver.Registry, class string) *driver.Service {
	t.Helper()
	for _, s := range r.Services() {
		if s.Class() == class {
			return s
		}
	}
	t.Fatalf("no %s in the registry", class)
	return nil
}

func TestAdminTerminate(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	disk := findClass(t, r, "SCSIDevice")

	res, err := adminTerminate(context.Background(), r, idArgs{ID: disk.ID()}, 5*time.Second)
	require.NoError(t, err)
	require.True(t, res.Freed)
	_, err = findService(r, disk.ID())
	require.ErrorIs(t, err, errNoSuchService, "a freed service is gone")

	_, err = adminTerminate(context.Background(), r, idArgs{ID: 999999}, time.Second)
	require.ErrorIs(t, err, errNoSuchService)
}

func TestAdminTerminateReportsHolder(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	dev := findClass(t, r, "USBDevice")
	dev.TaggedRetain(holderTag{})

	res, err := adminTerminate(context.Background(), r, idArgs{ID: dev.ID()}, 300*time.Millisecond)
	require.False(t, res.Freed)
	var be *driver.BlockedError
	require.True(t, errors.As(err, &be), "want a BlockedError, got %v", err)
	require.Contains(t, err.Error(), "test holder")

	dev.TaggedRelease(holderTag{})
	select {
	case <-dev.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("not freed after the holder let go")
	}
}

func TestAdminWhyLeaksUnload(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	drv := findClass(t, r, "USBMassStorage")

	why, err := adminWhy(r, idArgs{ID: drv.ID()})
	require.NoError(t, err)
	// Held open by a user client that nothing owns but the registry: the
	// one chain is structural at its root; the attachments are context.
	require.Contains(t, why, `"registry" → UserClient#`)
	require.Contains(t, why, `→ USBMassStorage#`)
	require.Contains(t, why, "(structural)")
	require.Contains(t, why, "structural (context, not owning): client UserClient#")
	require.Equal(t, 1, strings.Count(why, "→ USBMassStorage#"), "one chain: %s", why)

	// Nothing terminated yet: nothing should be gone, so no leaks.
	out, err := adminLeaks(r, leaksArgs{Format: "text"})
	require.NoError(t, err)
	require.Contains(t, string(out), "no leaks: ")
	all, err := adminLeaks(r, leaksArgs{Format: "json", All: true})
	require.NoError(t, err)
	require.Contains(t, string(all), `"schema_version"`)
	_, err = adminLeaks(r, leaksArgs{Format: "yaml"})
	require.ErrorContains(t, err, "unknown format")

	// The driver is held by a leaked reference: unload refuses, naming it,
	// and leaks now reports it, as does the progress report.
	drv.TaggedRetain(holderTag{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = adminUnload(ctx, r, unloadArgs{Driver: "usbstorage", Timeout: 300 * time.Millisecond})
	require.ErrorIs(t, err, driver.ErrHasInstances)
	require.Contains(t, err.Error(), "test holder")
	out, err = adminLeaks(r, leaksArgs{Format: "text"})
	require.NoError(t, err)
	require.Contains(t, string(out), "test holder")
	bl := adminBlockers(r, "usbstorage")
	require.NotEmpty(t, bl)
	require.Contains(t, bl[0].What, "test holder")
	why, err = adminWhy(r, idArgs{ID: drv.ID()})
	require.NoError(t, err)
	require.Contains(t, why, "terminated")
	require.Contains(t, why, `"test holder" → USBMassStorage`)

	drv.TaggedRelease(holderTag{})
	_, err = adminUnload(ctx, r, unloadArgs{Driver: "usbstorage", Timeout: 5 * time.Second})
	require.NoError(t, err)
	_, err = adminUnload(ctx, r, unloadArgs{})
	require.Error(t, err)
}

// drvctl terminate refuses drvkit's own services: the registry root (which
// would leave a daemon terminating every device as it arrives) and the
// monitor's pseudo-service; the registry is untouched.
func TestAdminTerminateRefusesInfrastructure(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	before := len(r.Services())
	for _, id := range []uint64{r.Root().ID(), monitorID} {
		_, err := adminTerminate(context.Background(), r, idArgs{ID: id}, time.Second)
		require.ErrorIs(t, err, errRefused, "id %d", id)
		require.Contains(t, err.Error(), "refusing to terminate")
	}
	require.True(t, r.Root().State().Active, "the root is still active")
	require.Len(t, r.Services(), before)
}

//go:build linux

package devgrant_test

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	leaktest.Main(m)
}

// fdCount is how many descriptors the process has open.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// checkFDs fails the test if it ends with more descriptors than it began
// with (registered first, it runs after every other cleanup).
func checkFDs(t testing.TB) {
	before := fdCount(t)
	t.Cleanup(func() {
		// A descriptor closed by a goroutine that is ending may take a
		// moment; leaktest waits for the goroutines, this for the fds.
		deadline := time.Now().Add(2 * time.Second)
		for fdCount(t) > before && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		require.Equal(t, before, fdCount(t), "descriptors leaked")
	})
}

// nubs is a registry that publishes the nubs the tests grant, closed at
// the end of the test.
func newRegistry(t testing.TB) *driver.Registry {
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
	})
	return r
}

func publish(t testing.TB, r *driver.Registry, class, name string, props map[string]any) *driver.Service {
	n := r.NewNub(class, name, driver.NewProperties(props))
	require.NoError(t, r.Publish(nil, n))
	return n
}

// grant opens a grant for nub and closes it at the end of the test (if
// the test did not).
func grant(t testing.TB, res *drivertable.Resources, nub *driver.Service) *devgrant.Grant {
	g, err := devgrant.Open(context.Background(), res, nub)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, g.Close()) })
	return g
}

func TestClassesRegistered(t *testing.T) {
	require.Equal(t, []string{"HIDDevice", "SCSIDevice", "USBInterface"}, devgrant.Classes())
}

func TestOpenUngrantedClass(t *testing.T) {
	leaktest.Check(t)
	r := newRegistry(t)
	n := publish(t, r, "Gadget", "g0", nil)
	g, err := devgrant.Open(context.Background(), drivertable.NewResources(), n)
	require.NoError(t, err)
	require.Empty(t, g.Files)
	require.NoError(t, g.Close())
	require.NoError(t, g.Close(), "Close twice")
}

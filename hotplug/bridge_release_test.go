package hotplug_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// plugged publishes a two-interface stick through a live simulator and
// returns the bridge, the src and the registry.
func plugged(t *testing.T) (*driver.Registry, *hotplug.Bridge, *sim.Sim) {
	t.Helper()
	r, _ := newRegistry(t)
	dir := t.TempDir()
	sc, err := sim.ParseScenarioString("stick", "plug usb 2-1 vid=46f4 pid=0001 serial=R ifaces=08/06/50,ff/00/00\n")
	require.NoError(t, err)
	src, err := sim.New(sc, sim.Config{SysfsDir: dir})
	require.NoError(t, err)
	t.Cleanup(func() { src.Close() })
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: dir, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { b.Close() })
	require.NoError(t, b.Run(ctxT(t), src))
	require.NoError(t, b.Flush(ctxT(t)))
	return r, b, src
}

func findNub(t *testing.T, r *driver.Registry, name string) *driver.Service {
	t.Helper()
	for _, s := range r.Services() {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no nub %q", name)
	return nil
}

// A nub the bridge follows and someone else terminates (drvctl terminate)
// is freed without waiting for its device's remove uevent. Found by the
// reliability explorer, seed 219 (fail@publish+2: the failed publication's
// terminated nub stayed held by the bridge until the device left, so
// WaitQuiet blocked).
func TestBridgeReleasesNubTerminatedElsewhere(t *testing.T) {
	leaktest.Check(t)
	r, _, _ := plugged(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, findNub(t, r, "2-1").TerminateSync(ctx), "the bridge lets go of a nub terminated elsewhere")
	require.NoError(t, r.WaitQuiet(ctx))
}

// A publication that fails leaves no nub held by the bridge.
func TestBridgeReleasesNubWhosePublishFailed(t *testing.T) {
	leaktest.Check(t)
	in := faultinject.New()
	in.MustAdd(faultinject.Rule{Point: faultinject.Publish, Skip: 2, Action: faultinject.Fail(errors.New("publish refused"))})
	un, err := in.Install()
	require.NoError(t, err)
	defer un()
	r, _, _ := plugged(t)
	require.Equal(t, uint64(1), in.Stats().Fired["fail"])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.WaitQuiet(ctx), "the nub whose publication failed is freed")
}

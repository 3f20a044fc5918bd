package sim_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// drainLive reads events until the live source has nothing queued, which it
// shows by blocking: a short context ends the read.
func drainLive(t *testing.T, s *sim.Sim) []hotplug.Event {
	t.Helper()
	var out []hotplug.Event
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		ev, err := s.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		require.NoError(t, err)
		out = append(out, ev)
	}
}

func TestSimInject(t *testing.T) {
	sc, err := sim.ParseScenarioString("boot", "plug usb 2-1 vid=46f4 pid=0001 serial=X ifaces=08/06/50\n")
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{Live: true})
	require.NoError(t, err)
	defer s.Close()

	adds := drainLive(t, s)
	require.NotEmpty(t, adds)

	// Steps run on the goroutine calling Next; Inject waits for them.
	injected := make(chan error, 1)
	go func() {
		frag, err := sim.ParseScenarioFragment("drvctl src", "unplug 2-1\n")
		if err == nil {
			err = s.Inject(context.Background(), frag)
		}
		injected <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first, err := s.Next(ctx)
	require.NoError(t, err)
	select {
	case err := <-injected:
		t.Fatalf("Inject returned (%v) before its events were consumed", err)
	default:
	}
	// Inject returns once every event was handed out and Next called again.
	removes := append([]hotplug.Event{first}, drainLive(t, s)...)
	require.NoError(t, <-injected)
	for _, ev := range removes {
		require.Contains(t, []hotplug.Action{hotplug.ActionRemove, hotplug.ActionUnbind}, ev.Action, ev.String())
	}
	require.Equal(t, count(adds, hotplug.ActionAdd), count(removes, hotplug.ActionRemove), "every add has its remove")
	require.Equal(t, count(adds, hotplug.ActionBind), count(removes, hotplug.ActionUnbind), "every bind has its unbind")

	// A step that makes no sense against the live machine is refused with its line.
	frag, err := sim.ParseScenarioFragment("drvctl src", "unplug 2-1\n")
	require.NoError(t, err)
	go func() { injected <- s.Inject(context.Background(), frag) }()
	nctx, ncancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _ = s.Next(nctx)
	ncancel()
	err = <-injected
	var se *sim.ScenarioError
	require.ErrorAs(t, err, &se)
	require.Equal(t, 1, se.Line)

	// Close ends a Next waiting for injections.
	go func() { time.Sleep(20 * time.Millisecond); s.Close() }()
	_, err = s.Next(context.Background())
	require.ErrorIs(t, err, hotplug.ErrClosed)
}

func count(evs []hotplug.Event, a hotplug.Action) (n int) {
	for _, e := range evs {
		if e.Action == a {
			n++
		}
	}
	return n
}

func TestSimInjectNeedsLive(t *testing.T) {
	sc, err := sim.ParseScenarioString("empty", "")
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{})
	require.NoError(t, err)
	defer s.Close()
	frag, err := sim.ParseScenarioFragment("x", "wait 1ms\n")
	require.NoError(t, err)
	require.ErrorContains(t, s.Inject(context.Background(), frag), "not live")
	_, err = s.Next(context.Background())
	require.ErrorIs(t, err, io.EOF)
}

// TestSimInjectHonoursWait: a wait inside an injected fragment separates
// the events of the steps before it from those after it, as in a scenario
// file. (The simulator once ran the whole fragment first, so its events
// all came after the wait.)
func TestSimInjectHonoursWait(t *testing.T) {
	sc, err := sim.ParseScenarioString("empty", "")
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{Live: true})
	require.NoError(t, err)
	defer s.Close()
	const pause = 300 * time.Millisecond
	frag, err := sim.ParseScenarioFragment("drvctl sim", "plug usb 2-1 vid=46f4 pid=0001 ifaces=03/01/01\nwait 300ms\nunplug 2-1\n")
	require.NoError(t, err)
	injected := make(chan error, 1)
	go func() { injected <- s.Inject(context.Background(), frag) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type got struct {
		ev hotplug.Event
		at time.Time
	}
	var evs []got
	for len(evs) == 0 || evs[len(evs)-1].ev.Action != hotplug.ActionRemove || evs[len(evs)-1].ev.Name() != "2-1" {
		ev, err := s.Next(ctx)
		require.NoError(t, err)
		evs = append(evs, got{ev, time.Now()})
	}
	var lastPlug, firstUnplug time.Time
	for _, g := range evs {
		switch g.ev.Action {
		case hotplug.ActionAdd, hotplug.ActionBind:
			require.True(t, firstUnplug.IsZero(), "a plug event after an unplug event")
			lastPlug = g.at
		default:
			if firstUnplug.IsZero() {
				firstUnplug = g.at
			}
		}
	}
	require.GreaterOrEqual(t, firstUnplug.Sub(lastPlug), pause, "the wait must come between the plug's events and the unplug's")
	// Inject returns once Next is called after the last event.
	nctx, ncancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err = s.Next(nctx)
	ncancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, <-injected)
}

// TestSimInjectCancelDropsRest: when the injector's context ends during a
// wait, the steps after it are not run.
func TestSimInjectCancelDropsRest(t *testing.T) {
	sc, err := sim.ParseScenarioString("empty", "")
	require.NoError(t, err)
	s, err := sim.New(sc, sim.Config{Live: true})
	require.NoError(t, err)
	defer s.Close()
	frag, err := sim.ParseScenarioFragment("x", "plug usb 2-1 vid=1 pid=2 ifaces=03/01/01\nwait 1h\nunplug 2-1\n")
	require.NoError(t, err)
	ictx, icancel := context.WithCancel(context.Background())
	injected := make(chan error, 1)
	go func() { injected <- s.Inject(ictx, frag) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := s.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, hotplug.ActionAdd, first.Action)
	plugs := drainLive(t, s) // stops in the wait
	icancel()
	require.ErrorIs(t, <-injected, context.Canceled)
	for _, ev := range append(drainLive(t, s), plugs...) {
		require.NotEqual(t, hotplug.ActionRemove, ev.Action, "a step after the cancelled wait ran")
	}
	// The machine still has the device: a new injection can unplug it.
	frag, err = sim.ParseScenarioFragment("y", "unplug 2-1\n")
	require.NoError(t, err)
	go func() { injected <- s.Inject(context.Background(), frag) }()
	ev, err := s.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, hotplug.ActionRemove, ev.Action)
	require.Contains(t, path.Base(ev.DevPath), "2-1")
	drainLive(t, s)
	require.NoError(t, <-injected)
}

// TestSimInjectPlugWaitUnplugStartsDriver is the end-to-end form of the
// wait fix: through the bridge, plug–wait–unplug injected at run time
// starts the matching driver before the unplug terminates it.
func TestSimInjectPlugWaitUnplugStartsDriver(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, r)
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "hidif", Class: "HIDIface", ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{driver.MatchValue(usbbus.PropIfaceClass, 3)}, New: func() driver.Driver { return nopDriver{} }}))
	sc, err := sim.ParseScenarioString("empty", "")
	require.NoError(t, err)
	dir := t.TempDir()
	s, err := sim.New(sc, sim.Config{SysfsDir: dir, Live: true})
	require.NoError(t, err)
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: dir})
	runCtx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- b.Run(runCtx, s) }()

	frag, err := sim.ParseScenarioFragment("drvctl sim", "plug usb 2-1 vid=46f4 pid=0001 ifaces=03/01/01\nwait 200ms\nunplug 2-1\n")
	require.NoError(t, err)
	require.NoError(t, s.Inject(ctx, frag))
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))
	stopRun()
	require.ErrorIs(t, <-ran, context.Canceled)
	require.NoError(t, b.Close())
	require.NoError(t, s.Close())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
	var steps []string
	for _, l := range rec.Steps(driver.StepStart, driver.StepTerminate, driver.StepStop, driver.StepFree) {
		if strings.HasSuffix(l, " hidif") {
			steps = append(steps, l)
		}
	}
	require.Equal(t, []string{"start hidif", "terminate hidif", "stop hidif", "free hidif"}, steps)
}

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

package hotplug_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
)

// drainLive reads events until the live source has nothing queued, which it
// shows by blocking: a short context ends the read.
func drainLive(t *testing.T, s *hotplug.Sim) []hotplug.Event {
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
	sc, err := hotplug.ParseScenarioString("boot", "plug usb 2-1 vid=46f4 pid=0001 serial=X ifaces=08/06/50\n")
	require.NoError(t, err)
	s, err := hotplug.NewSim(sc, hotplug.SimConfig{Live: true})
	require.NoError(t, err)
	defer s.Close()

	adds := drainLive(t, s)
	require.NotEmpty(t, adds)

	// Steps run on the goroutine calling Next; Inject waits for them.
	injected := make(chan error, 1)
	go func() {
		frag, err := hotplug.ParseScenarioFragment("drvctl sim", "unplug 2-1\n")
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
	frag, err := hotplug.ParseScenarioFragment("drvctl sim", "unplug 2-1\n")
	require.NoError(t, err)
	go func() { injected <- s.Inject(context.Background(), frag) }()
	nctx, ncancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, _ = s.Next(nctx)
	ncancel()
	err = <-injected
	var se *hotplug.ScenarioError
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
	sc, err := hotplug.ParseScenarioString("empty", "")
	require.NoError(t, err)
	s, err := hotplug.NewSim(sc, hotplug.SimConfig{})
	require.NoError(t, err)
	defer s.Close()
	frag, err := hotplug.ParseScenarioFragment("x", "wait 1ms\n")
	require.NoError(t, err)
	require.ErrorContains(t, s.Inject(context.Background(), frag), "not live")
	_, err = s.Next(context.Background())
	require.ErrorIs(t, err, io.EOF)
}

package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// Type=notify readiness over a real notification socket: the daemon says
// READY=1 once its devices are published, pings WATCHDOG=1 under
// WatchdogSec=, and says STOPPING=1 when it shuts down.
func TestServeNotifiesSystemd(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	ns, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"})
	require.NoError(t, err)
	defer ns.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	t.Setenv("WATCHDOG_USEC", "100000") // pings every 50 ms
	t.Setenv("WATCHDOG_PID", "")
	next := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		require.NoError(t, ns.SetReadDeadline(time.Now().Add(10*time.Second)))
		n, err := ns.Read(buf)
		require.NoError(t, err)
		return string(buf[:n])
	}

	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\nscsi add 0:0:1:0\n"), 0o644))
	d := startServe(t, serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, drivers: "sg", logFormat: "text",
		logLevel: "error", trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})
	ready := next()
	require.True(t, strings.HasPrefix(ready, "READY=1\nSTATUS=serving "), "%q", ready)
	for range 2 {
		require.Equal(t, "WATCHDOG=1", next())
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
	for {
		m := next()
		if m == "WATCHDOG=1" {
			continue // sent before the stop
		}
		require.Equal(t, "STOPPING=1\nSTATUS=shutting down: terminating every service", m)
		break
	}
}

// fakeSource returns its events, then blocks until ctx ends.
type fakeSource struct{ evs []hotplug.Event }

func (f *fakeSource) Next(ctx context.Context) (hotplug.Event, error) {
	if len(f.evs) > 0 {
		ev := f.evs[0]
		f.evs = f.evs[1:]
		return ev, nil
	}
	<-ctx.Done()
	return hotplug.Event{}, ctx.Err()
}
func (f *fakeSource) Close() error { return nil }

// Coldplug is done only when the bridge comes back for the event after
// the last coldplug one: it has handled them all.
func TestColdplugDoneAfterLastHandled(t *testing.T) {
	evs := []hotplug.Event{{Origin: hotplug.OriginColdplug}, {Origin: hotplug.OriginColdplug}, {}}
	ms := &monitoredSource{Source: &fakeSource{evs: evs}, hub: newMonitorHub(), coldplugDone: make(chan struct{}), coldplugLeft: 2}
	ms.checkColdplug()
	done := func() bool {
		select {
		case <-ms.coldplugDone:
			return true
		default:
			return false
		}
	}
	ctx := context.Background()
	for range 2 {
		_, err := ms.Next(ctx)
		require.NoError(t, err)
		require.False(t, done())
	}
	_, err := ms.Next(ctx) // the bridge has handled the second
	require.NoError(t, err)
	require.True(t, done())

	none := &monitoredSource{Source: &fakeSource{}, hub: newMonitorHub(), coldplugDone: make(chan struct{})}
	none.checkColdplug()
	select {
	case <-none.coldplugDone:
	default:
		t.Fatal("no coldplug events: ready at once")
	}
}

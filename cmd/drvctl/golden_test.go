package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// normalizeReport makes a refcount report independent of where the
// repository is checked out, of line numbers, and of process-wide IDs.
func normalizeReport(s string) string {
	s = regexp.MustCompile(`\S+/([^/\s]+\.(go|s)):\d+`).ReplaceAllString(s, "$1:N")
	s = regexp.MustCompile(`\b([\w.-]+\.(go|s)):\d+`).ReplaceAllString(s, "$1:N")
	s = regexp.MustCompile(`#\d+`).ReplaceAllString(s, "#N")
	s = regexp.MustCompile(`\+0x[0-9a-f]+`).ReplaceAllString(s, "")
	return s
}

func TestLeaksGolden(t *testing.T) {
	leaktest.Check(t)
	r := scriptedRegistry(t)
	drv := findClass(t, r, "USBMassStorage")
	drv.TaggedRetain(holderTag{})
	defer func() {
		drv.TaggedRelease(holderTag{})
		<-drv.Done()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := adminUnload(ctx, r, unloadArgs{Driver: "usbstorage", Timeout: 200 * time.Millisecond})
	require.ErrorIs(t, err, driver.ErrHasInstances)
	out, err := adminLeaks(r, leaksArgs{Format: "text"})
	require.NoError(t, err)
	golden(t, "leaks.txt", []byte(normalizeReport(string(out))))
}

// TestMonitorGolden records the monitor lines of a scripted registry: a
// stick matched by usbstorage, opened by a user client, then unplugged.
func TestMonitorGolden(t *testing.T) {
	leaktest.Check(t)
	hub := newMonitorHub()
	var mu sync.Mutex
	var events []monitorEvent
	cancelSub := hub.subscribe(func(e monitorEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	})
	defer cancelSub()

	r := scriptedRegistryWith(t, hub.lifecycle)
	dev := findClass(t, r, "USBDevice")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uc := findClass(t, r, "UserClient")
	drv := findClass(t, r, "USBMassStorage")
	require.NoError(t, drv.Close(uc))
	require.NoError(t, dev.TerminateSyncWith(ctx, driver.CauseUnplug)) // as the bridge does on a remove

	mu.Lock()
	defer mu.Unlock()
	ids := map[uint64]uint64{}
	var b, j bytes.Buffer
	enc := json.NewEncoder(&j)
	for i := range events {
		e := events[i]
		e.Time = monoTime(i * 1000)
		if _, ok := ids[e.ServiceID]; !ok {
			ids[e.ServiceID] = uint64(len(ids) + 1)
		}
		e.ServiceID = ids[e.ServiceID]
		if e.Provider != 0 {
			if _, ok := ids[e.Provider]; !ok {
				ids[e.Provider] = uint64(len(ids) + 1)
			}
			e.Provider = ids[e.Provider]
		}
		e.Detail = regexp.MustCompile(`provider \d+`).ReplaceAllStringFunc(e.Detail, func(string) string { return "provider P" })
		require.NoError(t, writeMonitorLine(&b, &e, false))
		require.NoError(t, enc.Encode(&e))
	}
	golden(t, "monitor-registry.txt", b.Bytes())
	// drvctl monitor -o json: one compact object a line, times as
	// fixed-precision strings, empty fields left out.
	golden(t, "monitor-registry.json", j.Bytes())
}

// drvctl status, text and JSON, with what changes from run to run (pid,
// times, version, connections) normalized.
func TestStatusGolden(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("plug usb 2-1 vid=0781 pid=5567 ifaces=ff/00/00 product=\"Gadget\"\nscsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "error",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})
	require.Eventually(t, func() bool {
		st := d.status(time.Now())
		return st.Instances == 1 && st.Devices == 3 // sg on the disk; the gadget's interface has no driver
	}, 10*time.Second, 10*time.Millisecond)
	norm := func(s string) string {
		for _, r := range []struct{ re, to string }{
			{`pid \d+`, "pid N"}, {`"pid":\d+`, `"pid":N`},
			{`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`, "TIME"}, {`up [0-9hms.]+`, "up T"}, {`"uptime_seconds":\d+`, `"uptime_seconds":T`},
			{`version: +.*`, "version:          V"}, {`"version":\{[^}]*\}`, `"version":V`},
			{`connections: +\d+`, "connections:      C"}, {`"connections":\d+`, `"connections":C`},
		} {
			s = regexp.MustCompile(r.re).ReplaceAllString(s, r.to)
		}
		return strings.ReplaceAll(s, dir, "$DIR")
	}
	for _, tt := range []struct{ name, format string }{{"status.txt", "text"}, {"status.json", "json"}} {
		e, out, errb := testEnv(nil, 0)
		require.Equal(t, 0, run([]string{"status", "-o", tt.format, "--socket", sock}, e), errb.String())
		golden(t, tt.name, []byte(norm(out.String())))
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}

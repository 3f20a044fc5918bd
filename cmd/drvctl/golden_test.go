package main

import (
	"bytes"
	"context"
	"regexp"
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
	var b bytes.Buffer
	for i := range events {
		e := events[i]
		e.Time = monoTime(i * 1000)
		if _, ok := ids[e.ServiceID]; !ok {
			ids[e.ServiceID] = uint64(len(ids) + 1)
		}
		e.ServiceID = ids[e.ServiceID]
		e.Detail = regexp.MustCompile(`provider \d+`).ReplaceAllStringFunc(e.Detail, func(string) string { return "provider P" })
		require.NoError(t, writeMonitorLine(&b, &e, false))
	}
	golden(t, "monitor-registry.txt", b.Bytes())
}

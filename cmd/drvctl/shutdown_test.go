package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// leakTag is the distinctive tag of the reference the test leaks on purpose.
const leakTag = "leaked-on-purpose-by-TestServeShutdownLeakCheck"

// TestServeShutdownLeakCheck: serve exits with an error and a leak report on
// stderr when a service is still held at shutdown, whatever the tracing
// (the registry knows which services were never freed); a clean shutdown
// under partial tracing says the object-level check covered only the traced
// classes.
func TestServeShutdownLeakCheck(t *testing.T) {
	tests := []struct {
		trace string
		leak  bool
		want  []string // on stderr
	}{
		{trace: "all", leak: true, want: []string{"objects leaked at shutdown", sg.Class, "never freed", leakTag}},
		{trace: "off", leak: true, want: []string{"objects leaked at shutdown", sg.Class, "never freed",
			"object-level check covered only the traced classes (--trace off)"}},
		{trace: sg.NubClass, leak: true, want: []string{"objects leaked at shutdown", sg.Class, "never freed"}},
		{trace: "all", want: []string{"every service freed, nothing leaked"}},
		{trace: "off", want: []string{"every service freed; no traced object leaked", "--trace off"}},
		{trace: sg.Class + "," + sg.NubClass, want: []string{"every service freed; no traced object leaked",
			"object-level check covered only the traced classes (--trace " + sg.Class + "," + sg.NubClass + ")"}},
	}
	for _, tt := range tests {
		name := "clean/" + tt.trace
		if tt.leak {
			name = "leak/" + tt.trace
		}
		t.Run(name, func(t *testing.T) {
			leaktest.Check(t)
			t.Cleanup(refcount.TraceAll) // serve changed the tracing; leaktest traces every class
			dir := t.TempDir()
			scn := filepath.Join(dir, "boot.scn")
			require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0 vendor=QEMU model=\"QEMU HARDDISK\"\n"), 0o644))
			o := serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, drivers: "sg",
				logFormat: "text", logLevel: "info", trace: tt.trace, socketGroup: -1,
				termTimeout: 10 * time.Second, closeTimeout: 300 * time.Millisecond}

			d := startServe(t, o)
			var drv *driver.Service
			require.Eventually(t, func() bool {
				for _, s := range d.reg.Services() {
					if s.Class() == sg.Class && s.State().Active {
						drv = s
						return true
					}
				}
				return false
			}, 10*time.Second, 10*time.Millisecond, "sg never started on the disk")
			if tt.leak {
				drv.TaggedRetain(leakTag)
			}
			hist, _ := d.hub.History()

			err := d.stop()
			out := d.log.String()
			if tt.leak {
				require.Error(t, err, out)
				require.ErrorContains(t, err, "1 service(s) never freed")
				// The report names the leaked driver (and under tracing the
				// tag that holds it).
				require.Contains(t, out, drv.String())
				// Clean up: the leaked reference goes, the driver and its
				// nub are freed, and the registry's worker ends.
				drv.TaggedRelease(leakTag)
				select {
				case <-drv.Done():
				case <-time.After(10 * time.Second):
					t.Fatal("the driver was not freed after the leaked reference went")
				}
			} else {
				require.NoError(t, err, out)
				require.NotContains(t, out, "leaked at shutdown")
			}
			t.Logf("stderr:\n%s", out)
			for _, w := range tt.want {
				require.Contains(t, out, w)
			}
			checkHistory(t, hist)
		})
	}
}

// checkHistory validates the lifecycle steps the daemon's monitor kept.
func checkHistory(t *testing.T, hist []monitorEvent) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for i := range hist {
		require.NoError(t, enc.Encode(&hist[i]))
	}
	evs, err := lifecycletest.ReadMonitorJSON(&b)
	require.NoError(t, err)
	require.NotEmpty(t, evs)
	require.NoError(t, lifecycletest.Validate(evs, false))
}

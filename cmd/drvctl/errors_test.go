package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// The error lines of the CLI, one golden file each under testdata/errors:
// each says what happened once, with no repeated prefix and no library
// layers. Usage text after a command-line error is replaced by a marker.

// errorOutput is the exit code and what drvctl printed on stderr, with dir
// written $DIR.
func errorOutput(code int, stderr, dir string) []byte {
	out := stderr
	if i := strings.Index(out, "usage: drvctl"); i >= 0 {
		out = out[:i] + "[usage follows]\n"
	}
	out = strings.ReplaceAll(out, dir, "$DIR")
	// Service IDs are process-wide: other tests' services came first.
	out = regexp.MustCompile(`#\d+`).ReplaceAllString(out, "#N")
	return []byte(fmt.Sprintf("exit %d\n%s", code, out))
}

// runCLI runs drvctl in-process.
func runCLI(args ...string) (int, string) {
	e, _, errb := testEnv(nil, 0)
	code := run(args, e)
	return code, errb.String()
}

func TestErrorLinesGolden(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "error",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})

	// A socket file nothing listens on: a daemon that was killed.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	require.NoError(t, l.Close())

	tests := []struct {
		name string
		args []string
	}{
		{"unknown-service-terminate", []string{"terminate", "999", "--socket", sock}},
		{"unknown-service-why", []string{"why", "999", "--socket", sock}},
		{"unknown-service-inspect", []string{"inspect", "9-9", "--socket", sock}},
		{"bad-monitor-kind", []string{"monitor", "--kind", "udev", "--socket", sock}},
		{"bad-inspect-property", []string{"inspect", "--property", "idVendor", "--socket", sock}},
		{"refused-terminate-root", []string{"terminate", fmt.Sprint(d.reg.Root().ID()), "--socket", sock}},
		{"refused-terminate-monitor", []string{"terminate", "18446744073709551615", "--socket", sock}},
		{"unknown-driver-unload", []string{"unload", "bogus", "--socket", sock}},
		{"unknown-driver-serve", []string{"serve", "--sim", scn, "--drivers", "sg,bogus", "--socket", filepath.Join(dir, "x.sock")}},
		{"unknown-driver-personality", []string{"serve", "--personality", "name=x,driver=bogus,vid=1d50"}},
		{"bad-personality-key", []string{"serve", "--personality", "name=x,driver=sg,vid=1d50"}},
		{"not-running", []string{"inspect", "--socket", filepath.Join(dir, "none.sock")}},
		{"not-running-stale-socket", []string{"leaks", "--socket", stale}},
		{"bad-step", []string{"sim", "unplug 9-9", "--socket", sock}},
		{"bad-step-syntax", []string{"sim", "unplug 2-1", "plug usb", "--socket", sock}},
		{"bad-scenario-file", []string{"serve", "--sim", filepath.Join(dir, "bad.scn"), "--socket", filepath.Join(dir, "y.sock")}},
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad.scn"), []byte("scsi add 0:0:0:0\nunplug 2-1\n"), 0o644))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := runCLI(tt.args...)
			golden(t, filepath.Join("errors", tt.name+".txt"), errorOutput(code, stderr, dir))
		})
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}

// A monitor whose daemon shuts down says so once, and exits 1.
func TestMonitorShutdownGolden(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "error",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})

	e, out, errb := testEnv(nil, 0)
	done := make(chan int, 1)
	go func() { done <- run([]string{"monitor", "--socket", sock}, e) }()
	// The monitor's stream is open once the daemon has a subscriber
	// besides its own.
	require.Eventually(t, func() bool { return d.hub.subscribers() > 0 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
	var code int
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the monitor did not end with its daemon")
	}
	require.Contains(t, out.String(), "monitor will print")
	golden(t, filepath.Join("errors", "monitor-shutdown.txt"), errorOutput(code, errb.String(), dir))
}

// subscribers counts the hub's subscribers (open monitors).
func (h *monitorHub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

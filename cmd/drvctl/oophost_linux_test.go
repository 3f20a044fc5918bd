package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
)

// TestServeBundleOutOfProcess: `drvctl serve --sim` with the Python sample
// bundle in its drivers directory: a device it matches is driven in a
// process of its own; an application calls it and hears its
// notifications; `drvctl drivers` shows the process; SIGKILLed, it crashes
// (the application hears "crashed"), is relaunched and listed with one
// crash; `drvctl unload` stops it; the daemon shuts down with nothing
// leaked and no process left.
func TestServeBundleOutOfProcess(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("python3 is not in /usr/bin: the Python sample bundle cannot run")
	}
	leaktest.Check(t)
	dir := t.TempDir()
	ddir, err := os.MkdirTemp("", "drvkit-drivers-")
	require.NoError(t, err)
	defer os.RemoveAll(ddir)
	require.NoError(t, os.MkdirAll(filepath.Join(ddir, "pycounter"), 0o755))
	require.NoError(t, os.Chmod(ddir, 0o755))
	for _, f := range []string{"driver.py", "manifest.toml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", "bundles", "pycounter", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(ddir, "pycounter", f), b, 0o755))
	}
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, nil, 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "info",
		trace: "all", socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second,
		bundles: bundleOptions{dir: ddir}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := func(args ...string) (int, string, string) {
		e, out, errb := testEnv(nil, 0)
		code := run(append(args, "--socket", sock), e)
		return code, out.String(), errb.String()
	}

	require.NoError(t, d.inject(ctx, "plug usb 1-1 vid=1209 pid=0001 product=\"Counter\" ifaces=03/00/00 hid=keyboard"))
	var row driverRow
	require.Eventually(t, func() bool {
		row = rowOf(t, driversJSON(t, sock), "pycounter")
		return row.Instances == 1 && len(row.PIDs) == 1
	}, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, "running", row.State)
	pid := row.PIDs[0]
	code, out, errs := cli("drivers")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `(?m)^pycounter\s+1\.0\.0\s+bundle\s+running\s+1\s+`+strconv.Itoa(pid)+`\s+0\s+-$`, out)

	c, err := userclient.Dial(ctx, sock)
	require.NoError(t, err)
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Class: "Counter"})
	require.NoError(t, err)
	res, err := h.Call(ctx, "count", nil)
	require.NoError(t, err)
	var r struct{ Count, PID int }
	require.NoError(t, json.Unmarshal(res, &r))
	require.Equal(t, pid, r.PID)
	_, err = h.Call(ctx, "notify", []byte("hi"))
	require.NoError(t, err)
	n := <-h.Notifications()
	require.Equal(t, "hi", string(n.Data))

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	for n := range h.Notifications() {
		if n.Type == "ServiceIsTerminated" {
			require.Equal(t, "crashed", n.Cause)
			break
		}
	}
	require.NoError(t, h.Close())
	require.Eventually(t, func() bool {
		row = rowOf(t, driversJSON(t, sock), "pycounter")
		return row.Instances == 1 && len(row.PIDs) == 1 && row.PIDs[0] != pid
	}, 20*time.Second, 10*time.Millisecond, "relaunched")
	require.Equal(t, 1, row.Crashes)
	require.Contains(t, row.LastError, "killed by signal")

	code, out, errs = cli("unload", "pycounter")
	require.Equal(t, 0, code, errs)
	require.True(t, strings.HasSuffix(out, "unloaded pycounter: every instance freed\n"), out)
	require.NoError(t, c.Close())
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
	require.Contains(t, d.log.String(), "started on HIDDevice", "the driver's log line reached the daemon's log")
}

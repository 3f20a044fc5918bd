package main

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
)

// TestServeTerminationCauses: each way the daemon terminates a service
// gives the cause its monitor shows — drvctl terminate is an
// administrator's, a device the simulated bus removes is unplugged, drvctl
// unload unloads, and serve's shutdown is a shutdown; services reached by
// cascade show "provider" with the root cause.
func TestServeTerminationCauses(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\nscsi add 0:0:0:1\nscsi add 0:0:0:2\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "warn",
		trace: "all", socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second})
	require.Eventually(t, func() bool {
		n := 0
		for _, s := range d.reg.Services() {
			if s.Class() == sg.Class && s.State().Started {
				n++
			}
		}
		return n == 3
	}, 10*time.Second, 10*time.Millisecond, "sg did not start on the three disks")
	// The daemon's monitor stops before the registry closes: the test
	// subscribes itself to see the shutdown too.
	var mu sync.Mutex
	seen := map[uint64]string{} // service ID → "cause/root" of its terminate
	cancel := d.reg.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Step == driver.StepTerminate {
			mu.Lock()
			seen[e.ServiceID] = e.Cause.Text() + "/" + e.RootCause.Text()
			mu.Unlock()
		}
	})
	t.Cleanup(cancel)
	nubs, sgs := map[string]uint64{}, map[string]uint64{}
	for _, s := range d.reg.Services() {
		if s.Class() == sg.NubClass {
			nubs[s.Name()] = s.ID()
			sgs[s.Name()] = s.Clients()[0].ID()
		}
	}
	ctl := func(args ...string) {
		t.Helper()
		e, _, errb := testEnv(nil, 0)
		require.Equal(t, exitOK, run(append(args, "--socket", sock), e), errb.String())
	}
	want := map[uint64]string{}
	for _, step := range []struct {
		name string
		do   func(t *testing.T)
		adds map[uint64]string
	}{
		{"drvctl terminate", func(t *testing.T) { ctl("terminate", strconv.FormatUint(nubs["0:0:0:0"], 10)) },
			map[uint64]string{nubs["0:0:0:0"]: "admin/admin", sgs["0:0:0:0"]: "provider/admin"}},
		{"device removed", func(t *testing.T) { ctl("sim", "scsi remove 0:0:0:1") },
			map[uint64]string{nubs["0:0:0:1"]: "unplug/unplug", sgs["0:0:0:1"]: "provider/unplug"}},
		{"drvctl unload", func(t *testing.T) { ctl("unload", "sg") },
			map[uint64]string{sgs["0:0:0:2"]: "unload/unload"}},
		{"shutdown", func(t *testing.T) {
			hist, _ := d.hub.History()
			checkHistory(t, hist) // the monitor's trace up to here keeps the contract
			require.NoError(t, d.stop(), "%s", d.log.Bytes())
		}, map[uint64]string{d.reg.Root().ID(): "shutdown/shutdown", nubs["0:0:0:2"]: "provider/shutdown"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.do(t)
			for k, v := range step.adds {
				want[k] = v
			}
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return maps.Equal(want, seen)
			}, 10*time.Second, 10*time.Millisecond, "terminate events")
			mu.Lock()
			require.Equal(t, want, seen)
			mu.Unlock()
		})
	}
	// The monitor shows the causes too.
	hist, _ := d.hub.History()
	var lines []string
	for _, e := range hist {
		if e.Kind == "lifecycle" && e.Step == driver.StepTerminate.String() && e.ServiceID == nubs["0:0:0:1"] {
			var b strings.Builder
			require.NoError(t, writeMonitorLine(&b, &e, false))
			lines = append(lines, b.String()[strings.Index(b.String(), "]"):])
		}
	}
	require.Equal(t, []string{"] terminate " + sg.NubClass + " id=" + strconv.FormatUint(nubs["0:0:0:1"], 10) + " name=0:0:0:1 cause=unplug\n"}, lines)
}

// TestShutdownCauseReachesApplications: an application connected over the
// socket hears that its device goes because the daemon shuts down — not a
// bare end of connection — and may close it before the socket closes.
func TestShutdownCauseReachesApplications(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "warn",
		trace: "all", socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second})
	rec := lifecycletest.Record(t, d.reg) // joins after the boot disk's attach: the checker allows that
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := userclient.Dial(ctx, sock)
	require.NoError(t, err)
	defer c.Close()
	h, err := c.OpenWait(ctx, userclient.Match{Personality: "sg"})
	require.NoError(t, err)

	stopped := make(chan error, 1)
	go func() { stopped <- d.stop() }()
	var got []string
	for n := range h.Notifications() {
		got = append(got, string(n.Type)+" "+n.Cause+"/"+n.RootCause)
		if n.Type == userclient.ServiceIsRequestingClose {
			require.NoError(t, h.Close()) // a well-behaved application lets go
			break
		}
	}
	require.Equal(t, []string{"ServiceIsTerminated provider/shutdown", "ServiceIsRequestingClose provider/shutdown"}, got)
	require.NoError(t, <-stopped, "%s", d.log.Bytes())
	rec.Check(t) // the shutdown kept the contract: terminate < stop < detach < free for everything
}

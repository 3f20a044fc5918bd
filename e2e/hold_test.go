//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/drvkit/drvkit/hotplug/usbhold"
)

// The USB hold on the real kernel (hotplug/usbhold): with usbstorage
// loaded, a stick plugged in never becomes a kernel disk — no block
// uevent, no SCSI host, no /dev/sdX — because its interface is created
// unauthorized behind the root hub's gate and drvkit claims it before any
// kernel driver may bind; unloading usbstorage (or stopping the daemon, or
// starting one after a SIGKILL) gives it back to usb-storage and the disk
// appears. With --usb-hold=false the same plug shows the flash the hold
// prevents, so the test can tell the two apart.

const (
	holdState = journalDir + "/usb-hold.json"
	devWatch  = "/tmp/devwatch.log"

	// stickBundle is the shipped usbstorage bundle
	// (examples/bundles/usbstorage: the built-in usbstorage, unchanged,
	// out of process), installed with its manifest unchanged in the
	// default drivers directory. Its device is the usbfs node the daemon
	// grants it.
	stickBundle    = "usbstorage-oop"
	stickBundleExe = "usbstorage"
	stickBundleDir = "/etc/drvkit/drivers.d/" + stickBundle
)

// gateValues reads interface_authorized_default of every root hub.
func gateValues(t *testing.T, ctx context.Context, a *Agent) map[string]string {
	t.Helper()
	r, err := a.Exec(ctx, "sh", "-c", `for f in /sys/bus/usb/devices/usb*/interface_authorized_default; do d=${f%/*}; echo "${d##*/} $(cat $f)"; done`)
	require.NoError(t, err)
	out := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		hub, v, ok := strings.Cut(l, " ")
		require.True(t, ok, "line %q", l)
		out[hub] = v
	}
	require.NotEmpty(t, out, "root hubs")
	return out
}

// waitGates polls until every root hub's default is want.
func waitGates(t *testing.T, ctx context.Context, d *daemon, want string) {
	t.Helper()
	d.poll(ctx, "interface_authorized_default "+want+" on every root hub", func() (bool, string) {
		g := gateValues(t, ctx, d.m.Agent)
		for _, v := range g {
			if v != want {
				return false, fmt.Sprint(g)
			}
		}
		return true, ""
	})
}

// startDevWatch records every entry created in /dev (e2e-app -watch-dir:
// inotify, so a node that exists for a moment is seen).
func startDevWatch(t *testing.T, ctx context.Context, a *Agent) {
	t.Helper()
	_, err := a.Start(ctx, "devwatch", "e2e-app", "-watch-dir", "/dev", "-status", devWatch)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		r, err := a.Exec(ctx, "cat", devWatch)
		return err == nil && strings.Contains(r.Stdout, `"watching"`)
	}, 10*time.Second, 50*time.Millisecond)
}

// devCreated returns the /dev entries created since the log was cleared.
func devCreated(t *testing.T, ctx context.Context, a *Agent) []string {
	t.Helper()
	r, err := a.Exec(ctx, "cat", devWatch)
	require.NoError(t, err)
	var out []string
	for _, l := range parseAppLines(t, r.Stdout) {
		require.NotEqual(t, "overflow", l.Event, "the /dev watch overflowed")
		if l.Event == "created" {
			out = append(out, l.Data)
		}
	}
	return out
}

func clearDevWatch(t *testing.T, ctx context.Context, a *Agent) {
	t.Helper()
	_, err := a.Exec(ctx, "sh", "-c", ": >"+devWatch)
	require.NoError(t, err)
}

// diskEntries are the sd* block nodes among names.
func diskEntries(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "sd") {
			out = append(out, n)
		}
	}
	return out
}

// kernelDiskEvents are the uevents after mark that a kernel disk on the
// stick makes: a usb-storage or uas bind, a SCSI host, a block device.
func kernelDiskEvents(a *Agent, mark int) []*agentproto.Uevent {
	var out []*agentproto.Uevent
	for _, m := range []Match{
		{Subsystem: "block", Devpath: "/usb"},
		{Subsystem: "scsi_host", Devpath: "/usb"},
		{Subsystem: "scsi", Devpath: "/usb"},
		{Action: "bind", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DRIVER": "usb-storage"}},
		{Action: "bind", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DRIVER": "uas"}},
	} {
		out = append(out, a.Uevents(mark, m)...)
	}
	return out
}

var (
	ifaceAdd = Match{Action: "add", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "usb_interface", "INTERFACE": "8/6/80"}}
	ksBind   = Match{Action: "bind", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DRIVER": "usb-storage"}}
	diskAdd  = Match{Action: "add", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}}
	diskDel  = Match{Action: "remove", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}}
)

func since(a, b *agentproto.Uevent) time.Duration {
	return time.Duration(b.TimeNs - a.TimeNs).Round(100 * time.Microsecond)
}

// startedAfter is how long after the uevent from the daemon's driver
// instance id returned from Start: the monitor stamps lifecycle events
// with CLOCK_MONOTONIC, as the agent stamps uevents. (A usbfs claim makes
// no uevent of its own.)
func (d *daemon) startedAfter(ctx context.Context, from *agentproto.Uevent, id uint64) time.Duration {
	d.t.Helper()
	var at float64
	d.poll(ctx, fmt.Sprintf("the start of #%d in the monitor's trace", id), func() (bool, string) {
		r, err := d.m.Agent.Exec(ctx, "grep", fmt.Sprintf(`"step":"start","service_id":%d,`, id), monitorOut)
		require.NoError(d.t, err)
		var ev struct {
			Time float64 `json:"time,string"` // fixed-precision seconds, as a string
		}
		line, _, _ := strings.Cut(r.Stdout, "\n")
		if line == "" || json.Unmarshal([]byte(line), &ev) != nil {
			return false, r.Stdout
		}
		at = ev.Time
		return true, ""
	})
	return (time.Duration(at*1e9) - time.Duration(from.TimeNs)).Round(100 * time.Microsecond)
}

// readHoldState is the daemon's hold state file; an empty state when
// there is none.
func readHoldState(t *testing.T, ctx context.Context, a *Agent) usbhold.State {
	t.Helper()
	r, err := a.Exec(ctx, "cat", holdState)
	require.NoError(t, err)
	if r.Exit != 0 {
		require.Contains(t, r.Stderr, "No such file")
		return usbhold.State{}
	}
	st, err := usbhold.ParseState([]byte(r.Stdout))
	require.NoError(t, err, "%s", r.Stdout)
	return st
}

// replug unplugs the stick if it is there, runs before, and plugs it in;
// it returns the uevent mark taken just before the plug.
func replug(t *testing.T, ctx context.Context, m *Machine, unplug bool) int {
	t.Helper()
	sctx, cancel := step(ctx)
	defer cancel()
	if unplug {
		mark := m.Agent.UeventMark()
		require.NoError(t, m.UnplugUSB(sctx))
		_, err := m.Agent.WaitUevent(sctx, mark, Match{Action: "remove", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "usb_device"}})
		require.NoError(t, err)
	}
	mark := m.Agent.UeventMark()
	_, err := m.PlugUSB(sctx, "")
	require.NoError(t, err)
	return mark
}

// plugHeld replugs the stick once d has set the gates, waits until driver
// drv's instance on it has started, and requires that the kernel made no
// disk of it meanwhile: no uevent of one, no /dev/sdX. It returns the
// instance, how long after the interface's add uevent its Start returned,
// and the uevent mark taken before the plug.
func plugHeld(t *testing.T, ctx context.Context, d *daemon, drv string) (*svcEntry, time.Duration, int) {
	t.Helper()
	return plugHeldFrom(t, ctx, d, drv, true)
}

// plugHeldFrom is plugHeld; unplug false: the stick is out already.
func plugHeldFrom(t *testing.T, ctx context.Context, d *daemon, drv string, unplug bool) (*svcEntry, time.Duration, int) {
	t.Helper()
	a := d.m.Agent
	waitGates(t, ctx, d, "0")
	clearDevWatch(t, ctx, a)
	mark := replug(t, ctx, d.m, unplug)
	doc := d.waitTree(ctx, drv+" on the replugged stick", func(doc *inspectDoc) bool {
		_, _, u := usbStick(doc, USBVendor, USBProduct, drv)
		return u != nil
	})
	_, _, inst := usbStick(doc, USBVendor, USBProduct, drv)
	add, err := a.WaitUevent(ctx, mark, ifaceAdd)
	require.NoError(t, err)
	started := d.startedAfter(ctx, add, inst.ID)
	requireNoKernelDisk(t, ctx, a, mark, drv)
	return inst, started, mark
}

// requireNoKernelDisk: since mark, no uevent of a kernel disk on the stick
// and no /dev/sdX (the /dev watch sees even a node that exists for a
// moment).
func requireNoKernelDisk(t *testing.T, ctx context.Context, a *Agent, mark int, drv string) {
	t.Helper()
	require.Empty(t, kernelDiskEvents(a, mark), "the kernel made a disk of a stick %s claims", drv)
	require.Empty(t, diskEntries(devCreated(t, ctx, a)), "a /dev/sdX node appeared")
}

// TestDrvctlUSBHold: a stick usbstorage claims never shows as a kernel
// disk; given back on unload, stop, and after a SIGKILL; the control
// without the hold shows the flash; usbstorage as a bundle, out of
// process, holds it as the built-in does — granted the usbfs device, it
// reads and writes the stick, survives a SIGKILL of its process without
// the kernel getting the stick, and lets go on unplug and unload.
func TestDrvctlUSBHold(t *testing.T) {
	ctx, m := scenarioWithin(t, Config{USBSerial: "HOLD-E2E"}, 5*time.Minute)
	a := m.Agent
	sctx, cancel := step(ctx)
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
	for hub, v := range gateValues(t, sctx, a) {
		require.Equal(t, "1", v, "%s authorizes new interfaces at boot", hub)
	}
	// Out first: the test plugs it in while each daemon watches.
	mark := a.UeventMark()
	require.NoError(t, m.UnplugUSB(sctx))
	_, err = a.WaitUevent(sctx, mark, Match{Action: "remove", Subsystem: "block", Devpath: "/usb"})
	require.NoError(t, err)
	cancel()
	startDevWatch(t, ctx, a)

	const lba, pattern = 3, "drvkit e2e: held from the kernel"
	var holdClaim, controlClaim, controlBind, gateBind time.Duration
	var heldStarts []time.Duration // interface add → usbstorage's Start returned, held

	if !timed(t, "1-plug-held", func(t *testing.T) {
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir)
		waitGates(t, ctx, d, "0")
		require.NotEmpty(t, readHoldState(t, ctx, a).Gated, "the gates are on record before they are set")
		clearDevWatch(t, ctx, a)

		mark := replug(t, ctx, m, false)
		doc := d.waitTree(ctx, "USBDevice → USBInterface → usbstorage", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil
		})
		_, iface, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		sctx, cancel := step(ctx)
		defer cancel()
		add, err := a.WaitUevent(sctx, mark, ifaceAdd)
		require.NoError(t, err)
		holdClaim = d.startedAfter(ctx, add, inst.ID)
		heldStarts = append(heldStarts, holdClaim)
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a), "drvkit's driver claimed the interface through usbfs")

		// The driver serves the stick: written and read back.
		lines := d.app(ctx, "-driver", "usbstorage", "-write", fmt.Sprint(lba), "-pattern", pattern, "-read", fmt.Sprint(lba))
		require.Equal(t, inst.ID, findLine(lines, "opened").Service)
		require.Equal(t, pattern, findLine(lines, "read").Data)

		// At no point a kernel disk: from before the plug until after the
		// driver started and served, no uevent of one, no /dev/sdX.
		require.Empty(t, kernelDiskEvents(a, mark), "the kernel made a disk of a stick usbstorage claims")
		require.Empty(t, diskEntries(devCreated(t, ctx, a)), "a /dev/sdX node appeared")
		st := readHoldState(t, ctx, a)
		require.Len(t, st.Held, 1, "%+v", st)
		require.Equal(t, iface.Name, st.Held[0].Interface)
		require.Equal(t, "usbstorage", st.Held[0].Personality)
		t.Logf("held: interface add → usbstorage's Start returned %v; uevents since the plug: %d, none of a kernel disk", holdClaim, len(a.Uevents(mark, Match{})))
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)

		// 2: unload gives it back: the kernel's usb-storage binds, the
		// disk appears, and with no USB personality left the gates go.
		umark := a.UeventMark()
		ur := d.drvctl(ctx, "unload", "usbstorage")
		require.Zero(t, ur.Exit, "%s %s", ur.Stdout, ur.Stderr)
		bind, err := a.WaitUevent(sctx, umark, ksBind)
		require.NoError(t, err, "usb-storage is bound again")
		disk, err := a.WaitUevent(sctx, umark, diskAdd)
		require.NoError(t, err, "/dev/sdX appears once drvkit lets go")
		t.Logf("unload: usb-storage bound, %s after it %v", disk.Get("DEVNAME"), since(bind, disk))
		waitGates(t, ctx, d, "1")
		require.Empty(t, readHoldState(t, ctx, a).Held)
		d.waitTree(ctx, "SCSIDevice (USB) → sg", func(doc *inspectDoc) bool {
			_, s := scsiDisk(doc, true)
			return s != nil
		})
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		d.stop(ctx)
		r, err := a.Exec(ctx, "test", "-e", holdState)
		require.NoError(t, err)
		require.NotZero(t, r.Exit, "no hold state after a clean stop")
	}) {
		return
	}

	if !timed(t, "3-stop-gives-back", func(t *testing.T) {
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir)
		_, started, _ := plugHeld(t, ctx, d, "usbstorage")
		heldStarts = append(heldStarts, started)
		got := findLine(d.app(ctx, "-driver", "usbstorage", "-read", fmt.Sprint(lba)), "read")
		require.Equal(t, pattern, got.Data, "the stick keeps what was written through usbstorage")
		smark := a.UeventMark()
		d.stop(ctx)
		for hub, v := range gateValues(t, ctx, a) {
			require.Equal(t, "1", v, "%s: the gate is lifted at stop", hub)
		}
		sctx, cancel := step(ctx)
		defer cancel()
		_, err = a.WaitUevent(sctx, smark, ksBind)
		require.NoError(t, err, "usb-storage gets the stick when the daemon stops")
		_, err = a.WaitUevent(sctx, smark, diskAdd)
		require.NoError(t, err)
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a))
	}) {
		return
	}

	if !timed(t, "4-control-no-hold", func(t *testing.T) {
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir, "--usb-hold=false")
		clearDevWatch(t, ctx, a)
		mark := replug(t, ctx, m, true)
		doc := d.waitTree(ctx, "usbstorage on the replugged stick", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil
		})
		_, _, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		for hub, v := range gateValues(t, ctx, a) {
			require.Equal(t, "1", v, "%s: no gate without the hold", hub)
		}
		sctx, cancel := step(ctx)
		defer cancel()
		add, err := a.WaitUevent(sctx, mark, ifaceAdd)
		require.NoError(t, err)
		bind, err := a.WaitUevent(sctx, mark, ksBind)
		require.NoError(t, err, "without the hold usb-storage binds first")
		disk, err := a.WaitUevent(sctx, mark, diskAdd)
		require.NoError(t, err, "without the hold the kernel's disk appears")
		gone, err := a.WaitUevent(sctx, mark, diskDel)
		require.NoError(t, err, "…and vanishes when drvkit detaches usb-storage")
		controlClaim, controlBind = d.startedAfter(ctx, add, inst.ID), since(add, bind)
		require.Contains(t, diskEntries(devCreated(t, ctx, a)), disk.Get("DEVNAME"), "inotify saw /dev/%s", disk.Get("DEVNAME"))
		t.Logf("control: interface add → usb-storage bind %v → /dev/%s %v → removed %v later; → usbstorage's Start returned %v",
			controlBind, disk.Get("DEVNAME"), since(add, disk), since(disk, gone), controlClaim)
		record("  %-46s /dev/%s visible %v (add→remove); usbstorage started %v after the interface (held: %v)", t.Name(), disk.Get("DEVNAME"), since(disk, gone), controlClaim, holdClaim)
		d.stop(ctx)
	}) {
		return
	}

	if !timed(t, "5-gate-not-claimed", func(t *testing.T) {
		// A USB personality is loaded (the gates are set), but not one
		// that matches this stick: the hold authorizes and probes it at
		// once, and the kernel's disk appears as usual.
		d := startDaemon(t, ctx, m, "--drivers", "sg", "--state-dir", journalDir,
			"--personality", "name=gadget,driver=usbstorage,vid=1d50,pid=6018")
		waitGates(t, ctx, d, "0")
		mark := replug(t, ctx, m, true)
		sctx, cancel := step(ctx)
		defer cancel()
		add, err := a.WaitUevent(sctx, mark, ifaceAdd)
		require.NoError(t, err)
		bind, err := a.WaitUevent(sctx, mark, ksBind)
		require.NoError(t, err, "the stick nobody here claims goes to usb-storage")
		_, err = a.WaitUevent(sctx, mark, diskAdd)
		require.NoError(t, err)
		gateBind = since(add, bind)
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a), "nothing of drvkit claims it")
		require.Empty(t, readHoldState(t, ctx, a).Held)
		t.Logf("behind the gate, not claimed: interface add → usb-storage bind %v (without a gate: %v)", gateBind, controlBind)
		record("  %-46s usb-storage bound %v after the interface behind the gate (no gate: %v)", t.Name(), gateBind, controlBind)
		d.stop(ctx)
	}) {
		return
	}

	if !timed(t, "6-sigkill-then-recover", func(t *testing.T) {
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir)
		_, started, _ := plugHeld(t, ctx, d, "usbstorage")
		heldStarts = append(heldStarts, started)
		record("  %-46s usbstorage started %v after the interface, held (3 plugs)", t.Name(), heldStarts)
		require.NoError(t, a.Signal(ctx, "serve", syscall.SIGKILL))
		r, err := a.Wait(ctx, "serve")
		require.NoError(t, err)
		require.Equal(t, "killed", r.Signal)
		_, err = a.Wait(ctx, "monitor")
		require.NoError(t, err)
		// What the kill leaves: gates set, the stick's interface without
		// a driver, the state on record.
		for hub, v := range gateValues(t, ctx, a) {
			require.Equal(t, "0", v, "%s: a killed daemon cannot lift its gate", hub)
		}
		require.Eventually(t, func() bool { return usbInterfaceDriver(t, ctx, a) == "" }, 5*time.Second, 50*time.Millisecond)
		require.Len(t, readHoldState(t, ctx, a).Held, 1)

		rmark := a.UeventMark()
		d = startDaemon(t, ctx, m, "--drivers", "sg", "--state-dir", journalDir)
		for hub, v := range gateValues(t, ctx, a) {
			require.Equal(t, "1", v, "%s: the next daemon lifted the gate before serving", hub)
		}
		sctx, cancel := step(ctx)
		defer cancel()
		_, err = a.WaitUevent(sctx, rmark, ksBind)
		require.NoError(t, err, "the held stick is given back to usb-storage")
		_, err = a.WaitUevent(sctx, rmark, diskAdd)
		require.NoError(t, err)
		d.waitTree(ctx, "SCSIDevice (USB) → sg", func(doc *inspectDoc) bool {
			_, s := scsiDisk(doc, true)
			return s != nil
		})
		require.Empty(t, readHoldState(t, ctx, a).Held)
		r2 := d.stop(ctx)
		require.Contains(t, r2.Stderr, "usb hold: undid what a previous daemon left")
	}) {
		return
	}

	timed(t, "7-bundle-held", func(t *testing.T) {
		// A bundle's personality holds the stick as usbstorage's does:
		// usbstorage itself, in a process of its own as nobody, is
		// granted the usbfs device after the daemon authorized (the hold)
		// and claimed the interface, reads and writes the disk through
		// it, and the kernel never makes a disk of it. The bundle is
		// loaded from the default drivers directory at start.
		manifest, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "bundles", "usbstorage", "manifest.toml"))
		require.NoError(t, err)
		installBundle(t, ctx, a, stickBundleDir, stickBundleExe, string(manifest))
		d := startDaemon(t, ctx, m, "--drivers", "sg", "--state-dir", journalDir)
		// Loaded at start, it took the stick the previous phase left to
		// usb-storage at once ("running"); the replug shows the hold.
		require.Contains(t, []string{"loaded", "running"}, d.driverRow(ctx, stickBundle).State)
		inst, started, mark := plugHeld(t, ctx, d, stickBundle)
		require.Equal(t, "USBMassStorage", inst.Class)
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a), "the daemon claimed the interface for the bundle's driver")
		row := d.waitDriverProcess(ctx, stickBundle, 0)
		dev, iface, _ := usbStick(d.inspect(ctx), USBVendor, USBProduct, stickBundle)
		// The grant is the usbfs device (devgrant's "usbfs" kind), not
		// the daemon's socket: the driver process holds the node
		// /dev/bus/usb/BBB/DDD of its stick, and no other device.
		node := fmt.Sprintf("/dev/bus/usb/%03d/%03d", atoi(t, dev.prop("busnum")), atoi(t, dev.prop("devnum")))
		requireUnprivileged(t, ctx, a, row.PIDs[0], node)
		st := readHoldState(t, ctx, a)
		require.Len(t, st.Held, 1, "%+v", st)
		require.Equal(t, iface.Name, st.Held[0].Interface)
		require.Equal(t, stickBundle, st.Held[0].Personality)

		// usbstorage in the bundle's process serves the stick: what phase
		// 1 wrote through the in-process usbstorage reads back, and a new
		// block is written and read.
		lines := d.app(ctx, "-driver", stickBundle, "-read", fmt.Sprint(lba))
		require.Equal(t, inst.ID, findLine(lines, "opened").Service)
		require.Equal(t, pattern, findLine(lines, "read").Data, "read through the usbfs grant")
		const bundlePattern = "drvkit e2e: through the bundle's usbfs grant"
		lines = d.app(ctx, "-driver", stickBundle, "-write", fmt.Sprint(lba+1), "-pattern", bundlePattern, "-read", fmt.Sprint(lba+1))
		require.Equal(t, bundlePattern, findLine(lines, "read").Data)
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		// Still no disk once the driver process ran I/O.
		requireNoKernelDisk(t, ctx, a, mark, stickBundle)
		record("  %-46s %s (usbstorage out of process, usbfs grant) started %v after the interface, held", t.Name(), stickBundle, started)

		// SIGKILLed with the stick plugged: the host relaunches it after
		// the backoff, and meanwhile the interface stays held (the hold
		// asks the host: Relaunching) — usb-storage does not get it, so
		// no disk appears to be detached again a moment later.
		oldPID, oldInst := row.PIDs[0], inst.ID
		t0 := time.Now()
		kr, err := a.Exec(ctx, "kill", "-KILL", fmt.Sprint(oldPID))
		require.NoError(t, err)
		require.Zero(t, kr.Exit, "%s", kr.Stderr)
		row = d.waitDriverProcess(ctx, stickBundle, oldPID)
		require.Equal(t, 1, row.Crashes)
		doc := d.waitTree(ctx, "the stick rematched to the relaunched driver", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, stickBundle)
			return u != nil && u.ID != oldInst && doc.byID(oldInst) == nil
		})
		_, _, inst = usbStick(doc, USBVendor, USBProduct, stickBundle)
		requireGone(t, ctx, a, oldPID)
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a))
		requireUnprivileged(t, ctx, a, row.PIDs[0], node)
		lines = d.app(ctx, "-driver", stickBundle, "-read", fmt.Sprint(lba+1))
		require.Equal(t, inst.ID, findLine(lines, "opened").Service)
		require.Equal(t, bundlePattern, findLine(lines, "read").Data)
		requireNoKernelDisk(t, ctx, a, mark, stickBundle)
		require.Len(t, readHoldState(t, ctx, a).Held, 1)
		t.Logf("SIGKILL of driver process %d → relaunched as %d, instance #%d, in %v; held throughout", oldPID, row.PIDs[0], inst.ID, time.Since(t0).Round(time.Millisecond))

		// Unplugged under the driver: the instance and its process go,
		// the hold forgets the interface, nothing is left; no disk.
		sctx, cancel := step(ctx)
		defer cancel()
		gmark := a.UeventMark()
		require.NoError(t, m.UnplugUSB(sctx))
		_, err = a.WaitUevent(sctx, gmark, Match{Action: "remove", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "usb_device"}})
		require.NoError(t, err)
		d.waitTree(ctx, "nothing of the unplugged stick", func(doc *inspectDoc) bool {
			return len(doc.withDriver(stickBundle)) == 0 && doc.byID(dev.ID) == nil
		})
		d.poll(ctx, "no driver process", func() (bool, string) {
			r := d.driverRow(ctx, stickBundle)
			return len(r.PIDs) == 0 && r.Instances == 0, fmt.Sprintf("%+v", r)
		})
		requireGone(t, ctx, a, row.PIDs[0])
		require.Empty(t, readHoldState(t, ctx, a).Held)
		require.Equal(t, 1, d.driverRow(ctx, stickBundle).Crashes, "an unplug is not a crash")
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		requireNoKernelDisk(t, ctx, a, mark, stickBundle)

		// Plugged again: held for the bundle once more; unloaded, the
		// bundle gives the stick back to the kernel.
		_, _, _ = plugHeldFrom(t, ctx, d, stickBundle, false)
		row = d.waitDriverProcess(ctx, stickBundle, 0)
		umark := a.UeventMark()
		ur := d.drvctl(ctx, "unload", stickBundle)
		require.Zero(t, ur.Exit, "%s %s", ur.Stdout, ur.Stderr)
		sctx, cancel = step(ctx)
		defer cancel()
		_, err = a.WaitUevent(sctx, umark, ksBind)
		require.NoError(t, err, "usb-storage is bound again")
		_, err = a.WaitUevent(sctx, umark, diskAdd)
		require.NoError(t, err, "/dev/sdX appears once the bundle lets go")
		waitGates(t, ctx, d, "1")
		require.Empty(t, readHoldState(t, ctx, a).Held)
		requireGone(t, ctx, a, row.PIDs[0])
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		d.stop(ctx)
	})
	require.NoError(t, a.Signal(ctx, "devwatch", syscall.SIGKILL))
	_, _ = a.Wait(ctx, "devwatch")
}

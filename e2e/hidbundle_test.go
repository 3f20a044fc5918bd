//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug/hidbus"
)

// The HID keyboard driver as a bundle (examples/bundles/hidkbd, issue 14)
// on the real kernel: loaded with `drvctl load`, run out of process as
// nobody, fed a hot-plugged QEMU usb-kbd's hidraw node, SIGKILLed while
// the keyboard is plugged, relaunched and rematched, and freed whole by
// device_del.

const (
	hidBundleName = "hidkbd-oop"
	hidBundleDir  = "/opt/" + hidBundleName
)

// bundleRow is a line of `drvctl drivers -o json`.
type bundleRow struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	Instances int    `json:"instances"`
	PIDs      []int  `json:"pids"`
	Crashes   int    `json:"crashes"`
	LastError string `json:"last_error"`
}

// driverRow is the row of driver name in `drvctl drivers -o json`.
func (d *daemon) driverRow(ctx context.Context, name string) bundleRow {
	d.t.Helper()
	r := d.drvctl(ctx, "drivers", "-o", "json")
	require.Zero(d.t, r.Exit, "drvctl drivers: %s", r.Stderr)
	var doc struct {
		Drivers []bundleRow `json:"drivers"`
	}
	require.NoError(d.t, json.Unmarshal([]byte(r.Stdout), &doc))
	for _, row := range doc.Drivers {
		if row.Name == name {
			return row
		}
	}
	d.t.Fatalf("no driver %q in %s", name, r.Stdout)
	return bundleRow{}
}

// waitDriverProcess waits until the driver has one instance and one
// process, other than not, and returns its pid.
func (d *daemon) waitDriverProcess(ctx context.Context, name string, not int) bundleRow {
	d.t.Helper()
	var row bundleRow
	d.poll(ctx, name+"'s driver process", func() (bool, string) {
		row = d.driverRow(ctx, name)
		return row.Instances == 1 && len(row.PIDs) == 1 && row.PIDs[0] != not, fmt.Sprintf("%+v", row)
	})
	return row
}

// installBundle puts a bundle into the guest as an operator would: its
// manifest and executable (the guest binary exe) in directory dir, and
// the user the bundles run as in /etc/passwd (the initramfs has none).
func installBundle(t *testing.T, ctx context.Context, a *Agent, dir, exe, manifest string) {
	t.Helper()
	r, err := a.Exec(ctx, "sh", "-c", `set -e
printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >/etc/passwd
printf 'root:x:0:\nnogroup:x:65534:\n' >/etc/group
mkdir -p "$2" && chmod 755 "$2"
cp "/bin-$3" "$2/$3" && chmod 755 "$2/$3"
printf '%s' "$1" >"$2/manifest.toml"`, "sh", manifest, dir, exe)
	require.NoError(t, err)
	require.Zero(t, r.Exit, "installing the bundle: %s", r.Stderr)
}

// installHIDBundle installs examples/bundles/hidkbd, manifest unchanged.
func installHIDBundle(t *testing.T, ctx context.Context, a *Agent) {
	t.Helper()
	manifest, err := os.ReadFile(filepath.Join(repoRoot(), "examples", "bundles", "hidkbd", "manifest.toml"))
	require.NoError(t, err)
	installBundle(t, ctx, a, hidBundleDir, "hidkbd", string(manifest))
}

// driverProcess is what /proc says about a driver process.
type driverProcess struct {
	uid, gid, groups, noNewPrivs string   // Uid:, Gid:, Groups:, NoNewPrivs: of its status
	devs                         []string // the /dev nodes its descriptors are
}

func readDriverProcess(t *testing.T, ctx context.Context, a *Agent, pid int) driverProcess {
	t.Helper()
	p := fmt.Sprintf("/proc/%d", pid)
	r, err := a.Exec(ctx, "sh", "-c", "cat "+p+"/status; echo ---; for f in "+p+"/fd/*; do readlink $f; done")
	require.NoError(t, err)
	require.Zero(t, r.Exit, "%s", r.Stderr)
	status, fds, _ := strings.Cut(r.Stdout, "---\n")
	var dp driverProcess
	for _, l := range strings.Split(status, "\n") {
		k, v, _ := strings.Cut(l, ":")
		v = strings.Join(strings.Fields(v), " ")
		switch k {
		case "Uid":
			dp.uid = v
		case "Gid":
			dp.gid = v
		case "Groups":
			dp.groups = v
		case "NoNewPrivs":
			dp.noNewPrivs = v
		}
	}
	for _, f := range strings.Fields(fds) {
		if strings.HasPrefix(f, "/dev/") {
			dp.devs = append(dp.devs, f)
		}
	}
	return dp
}

// requireUnprivileged: the driver process runs as the manifest's user
// (nobody), with no supplementary group and no_new_privs, and holds no
// device node but the one granted (a hidraw node; "": none, the device is
// served over a socket) and /dev/null, its stdin.
func requireUnprivileged(t *testing.T, ctx context.Context, a *Agent, pid int, granted string) {
	t.Helper()
	dp := readDriverProcess(t, ctx, a, pid)
	require.Equal(t, "65534 65534 65534 65534", dp.uid, "real, effective, saved and fs uid: nobody")
	require.Equal(t, "65534 65534 65534 65534", dp.gid)
	require.Empty(t, dp.groups, "no supplementary groups")
	require.Equal(t, "1", dp.noNewPrivs)
	if granted != "" {
		require.Contains(t, dp.devs, granted, "the granted descriptor")
	}
	for _, dev := range dp.devs {
		require.Contains(t, []string{granted, "/dev/null"}, dev, "a device the daemon did not grant")
	}
	t.Logf("driver process %d: uid %s gid %s groups %q no_new_privs %s; devices %v", pid, dp.uid, dp.gid, dp.groups, dp.noNewPrivs, dp.devs)
}

// requireGone: no process pid, not even a zombie.
func requireGone(t *testing.T, ctx context.Context, a *Agent, pid int) {
	t.Helper()
	r, err := a.Exec(ctx, "test", "-e", fmt.Sprintf("/proc/%d", pid))
	require.NoError(t, err)
	require.NotZero(t, r.Exit, "process %d is still there (reaped?)", pid)
}

// TestDrvctlHIDBundle: `drvctl load` of the hidkbd bundle into a daemon
// that has no HID driver of its own; a usb-kbd hot-plugged over QMP is
// matched by the bundle's personality and driven by a process of its own,
// which runs as nobody with no_new_privs and holds only the keyboard's
// hidraw node; keys sent with QMP input-send-event reach an application
// through that process, in order. The process is SIGKILLed with the
// keyboard plugged: the application hears ServiceIsTerminated with the
// cause "crashed", a new process (new pid) starts and rematches the same
// nub, and a re-opened application reads keys again. device_del frees
// everything: inspect shows nothing of the keyboard, `drvctl leaks` is
// empty, the lifecycle trace is complete and valid, and no driver process
// is left.
func TestDrvctlHIDBundle(t *testing.T) {
	ctx, m := scenarioWithin(t, Config{}, 5*time.Minute)
	a := m.Agent
	installHIDBundle(t, ctx, a)
	d := startDaemon(t, ctx, m, "--drivers", "sg")

	var devpath string
	var iface, nub, inst *svcEntry
	var row bundleRow
	if !timed(t, "bundle-load-plug", func(t *testing.T) {
		d.t = t
		r := d.drvctl(ctx, "load", hidBundleDir)
		require.Zero(t, r.Exit, "drvctl load: %s %s", r.Stdout, r.Stderr)
		require.Contains(t, r.Stdout, "loaded "+hidBundleName+" 1.0.0 from "+hidBundleDir+"/manifest.toml")
		require.Equal(t, "loaded", d.driverRow(ctx, hidBundleName).State)

		devpath = plugKeyboard(t, ctx, m, KeyboardID)
		name := filepath.Base(devpath)
		doc := d.waitTree(ctx, "USBInterface → HIDDevice → "+hidBundleName, func(doc *inspectDoc) bool {
			_, _, k := hidKeyboardOf(doc, hidBundleName, name)
			return k != nil
		})
		iface, nub, inst = hidKeyboardOf(doc, hidBundleName, name)
		requireNubIsSysfs(t, ctx, a, doc, iface, nub, inst, devpath)
		require.Empty(t, doc.withDriver("hidkbd"), "no built-in HID driver here")
		row = d.waitDriverProcess(ctx, hidBundleName, 0)
		require.Equal(t, "running", row.State)
		requireUnprivileged(t, ctx, a, row.PIDs[0], nub.prop(hidbus.PropHidraw))
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
	}) {
		return
	}

	// typeAndRead starts an application on instance id, types keys and
	// checks what reached it; the application keeps reading.
	typeAndRead := func(t *testing.T, name, status string, id uint64, keys []string, text string, events int, want []string) *appLine {
		_, err := a.Start(ctx, name, "e2e-app", "-socket", drvSock, "-driver", hidBundleName, "-hid-read",
			"-service", strconv.FormatUint(id, 10), "-leds", "2", "-status", status)
		require.NoError(t, err)
		lines := d.waitApp(ctx, status, "reading")
		require.NotNil(t, findLine(lines, "leds"), "an output report through the driver process")
		opened := findLine(lines, "opened")
		require.Equal(t, id, opened.Service)
		require.Equal(t, hidBundleName, opened.Personality)
		sctx, cancel := step(ctx)
		defer cancel()
		t0 := time.Now()
		require.NoError(t, m.TypeKeys(sctx, keys...))
		reports := waitTyped(t, ctx, d, status, text, events, want)
		t.Logf("%d input reports through the driver process in %v", len(reports), time.Since(t0).Round(time.Millisecond))
		return opened
	}

	var opened *appLine
	if !timed(t, "bundle-keys", func(t *testing.T) {
		d.t = t
		opened = typeAndRead(t, "kbdapp", "/tmp/kbd1.status", inst.ID, []string{"h", "i", "1", "shift+a"}, "hi1A", 8, []string{
			"00000b0000000000", "0000000000000000", // h
			"00000c0000000000", "0000000000000000", // i
			"00001e0000000000", "0000000000000000", // 1
			"0200000000000000", "0200040000000000", "0200000000000000", "0000000000000000", // shift+a
		})
	}) {
		return
	}

	oldPID, oldInst := row.PIDs[0], inst
	if !timed(t, "bundle-sigkill-relaunch", func(t *testing.T) {
		d.t = t
		t0 := time.Now()
		r, err := a.Exec(ctx, "kill", "-KILL", strconv.Itoa(oldPID))
		require.NoError(t, err)
		require.Zero(t, r.Exit, "%s", r.Stderr)
		// The application's read fails; it hears why, and closes.
		r, err = a.Wait(ctx, "kbdapp")
		require.NoError(t, err)
		require.Zero(t, r.Exit, "%s %s", r.Stdout, r.Stderr)
		lines := parseAppLines(t, r.Stdout)
		require.NotNil(t, findLine(lines, "read-error"), "%s", r.Stdout)
		var term *appLine
		for i := range lines {
			if lines[i].Event == "notification" && lines[i].Type == "ServiceIsTerminated" {
				term = &lines[i]
			}
		}
		require.NotNil(t, term, "ServiceIsTerminated: %s", r.Stdout)
		require.Equal(t, oldInst.ID, term.Service)
		require.Equal(t, "crashed", term.Cause)
		require.NotNil(t, findLine(lines, "closed"))

		// Relaunched: a new process, a new instance on the same nub.
		row = d.waitDriverProcess(ctx, hidBundleName, oldPID)
		require.Equal(t, 1, row.Crashes)
		require.Contains(t, row.LastError, "killed by signal")
		doc := d.waitTree(ctx, "the keyboard rematched, the crashed instance freed", func(doc *inspectDoc) bool {
			_, n, k := hidKeyboardOf(doc, hidBundleName, filepath.Base(devpath))
			return k != nil && k.ID != oldInst.ID && n.ID == nub.ID && doc.byID(oldInst.ID) == nil && doc.byID(opened.Client) == nil
		})
		iface, nub, inst = hidKeyboardOf(doc, hidBundleName, filepath.Base(devpath))
		t.Logf("SIGKILL of driver process %d → instance #%d rematched in process %d after %v", oldPID, inst.ID, row.PIDs[0], time.Since(t0).Round(time.Millisecond))
		record("  %-46s SIGKILLed driver process relaunched and rematched in %v", t.Name(), time.Since(t0).Round(time.Millisecond))
		requireGone(t, ctx, a, oldPID)
		requireUnprivileged(t, ctx, a, row.PIDs[0], nub.prop(hidbus.PropHidraw))
		evs := d.checkTrace(ctx)
		for _, id := range []uint64{opened.Client, oldInst.ID} {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)

		// A re-opened application reads keys again (the new process
		// decoded only what was typed since it started).
		opened = typeAndRead(t, "kbdapp2", "/tmp/kbd2.status", inst.ID, []string{"o", "k"}, "ok", 4, []string{
			"0000120000000000", "0000000000000000", // o
			"00000e0000000000", "0000000000000000", // k
		})
	}) {
		return
	}

	timed(t, "bundle-unplug", func(t *testing.T) {
		d.t = t
		dev := d.inspect(ctx).byID(iface.Providers[0])
		require.NotNil(t, dev)
		pid := row.PIDs[0]
		sctx, cancel := step(ctx)
		defer cancel()
		mark := a.UeventMark()
		require.NoError(t, m.QMP.DeviceDel(sctx, KeyboardID))
		r, err := a.Wait(sctx, "kbdapp2")
		require.NoError(t, err)
		require.Zero(t, r.Exit, "%s %s", r.Stdout, r.Stderr)
		lines := parseAppLines(t, r.Stdout)
		re := findLine(lines, "read-error")
		require.NotNil(t, re, "%s", r.Stdout)
		require.True(t, re.NoDevice, "the waiting read ends with ErrNoDevice: %s", re.Error)
		require.NotNil(t, findLine(lines, "closed"))

		d.waitTree(ctx, "the keyboard's services freed", func(doc *inspectDoc) bool {
			return doc.byID(dev.ID) == nil && doc.byID(iface.ID) == nil && doc.byID(nub.ID) == nil &&
				doc.byID(inst.ID) == nil && doc.byID(opened.Client) == nil
		})
		evs := d.checkTrace(ctx)
		for _, id := range []uint64{opened.Client, inst.ID, nub.ID, iface.ID, dev.ID} {
			requireTeardown(t, evs, id)
		}
		d.checkNoLeaks(ctx)
		_, err = a.WaitUevent(sctx, mark, Match{Action: "remove", Subsystem: "usb", Env: map[string]string{"DEVTYPE": "usb_device"}})
		require.NoError(t, err)
		// Nothing of the keyboard anywhere: no nub, no instance, no
		// process, and the bundle loaded and idle.
		doc := d.inspect(ctx)
		require.Empty(t, doc.find(func(s *svcEntry) bool {
			return s.Class == hidbus.ClassDevice || s.Driver == hidBundleName || s.Class == "USBDevice" && s.propHex("idVendor") == dev.propHex("idVendor")
		}), "%s", doc)
		d.poll(ctx, "no driver process", func() (bool, string) {
			row = d.driverRow(ctx, hidBundleName)
			return row.Instances == 0 && len(row.PIDs) == 0, fmt.Sprintf("%+v", row)
		})
		require.Equal(t, "loaded", row.State)
		requireGone(t, ctx, a, pid)

		ur := d.drvctl(ctx, "unload", hidBundleName)
		require.Zero(t, ur.Exit, "%s %s", ur.Stdout, ur.Stderr)
		require.Contains(t, ur.Stdout, "every instance freed")
	})
	d.t = t
	d.stop(ctx)
}

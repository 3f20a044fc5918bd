//go:build e2e && linux

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// scsiSoakRounds is how many times TestDrvctlSCSIUnplugReaders pulls the
// disk (DRVKIT_E2E_SCSI_ROUNDS overrides it).
const scsiSoakRounds = 20

// scsiRound is what one round measured. Guest times are on the guest's
// CLOCK_MONOTONIC, relative to the kernel's first remove uevent of the
// disk (a failure before it is negative: virtio-scsi aborts the commands
// in flight before the removal is announced).
type scsiRound struct {
	deleted      time.Duration // host: device_del → QEMU's DEVICE_DELETED
	readersDone  time.Duration // host: device_del → e2e-app exited (every reader failed, handle closed)
	freedSeen    time.Duration // host: device_del → inspect no longer lists the disk, sg or user client
	firstFail    time.Duration // guest: removal uevent → first reader failed
	lastFail     time.Duration // guest: removal uevent → last reader failed
	freed        time.Duration // guest: removal uevent → the sg instance freed (drvctl monitor)
	hosts        []string      // the host statuses the readers saw
	plugAttempts int
}

// TestDrvctlSCSIUnplugReaders is issue 19's SCSI unplug under I/O: `drvctl
// serve --drivers sg` drives the guest's virtio-scsi disk; an application
// (e2e-app, through the daemon's socket and the sg driver's read method)
// keeps 4 SG_IO reads in flight; the disk is pulled over QMP (device_del).
// Every reader must fail with ErrNoDevice — not ErrTerminated, not a
// transport error, not a hang (the application's calls time out after
// 10 s) — whatever host status the kernel gave the command (DID_ABORT,
// DID_ERROR, DID_BAD_TARGET, ENODEV from sg…). Then the user client, the
// sg instance and the SCSIDevice nub go terminate → stop → detach → free,
// the whole trace so far passes the lifecycle checker and drvctl leaks
// reports nothing; the disk is plugged back and the next round begins.
func TestDrvctlSCSIUnplugReaders(t *testing.T) {
	rounds := scsiSoakRounds
	if v := os.Getenv("DRVKIT_E2E_SCSI_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err, "DRVKIT_E2E_SCSI_ROUNDS")
		require.Positive(t, n, "DRVKIT_E2E_SCSI_ROUNDS")
		rounds = n
	}
	const depth = 4
	ctx, m := scenarioWithin(t, Config{}, 90*time.Second+time.Duration(rounds)*15*time.Second)
	a := m.Agent
	sctx, cancel := step(ctx)
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/virtio"})
	cancel()
	require.NoError(t, err)
	d := startDaemon(t, ctx, m, "--drivers", "sg")
	doc := d.waitTree(ctx, "SCSIDevice (virtio) → sg", func(doc *inspectDoc) bool {
		_, s := scsiDisk(doc, false)
		return s != nil
	})

	var res []scsiRound
	for i := range rounds {
		disk, inst := scsiDisk(doc, false)
		var r scsiRound
		if !timed(t, fmt.Sprintf("round%02d", i+1), func(t *testing.T) {
			d.t = t
			r = scsiUnplugRound(t, ctx, d, disk, inst, i, depth)
		}) {
			return
		}
		res = append(res, r)
		d.t = t
		doc = d.waitTree(ctx, "SCSIDevice (virtio) → sg after the replug", func(doc *inspectDoc) bool {
			d2, s := scsiDisk(doc, false)
			return s != nil && d2.ID != disk.ID
		})
	}
	d.t = t
	d.checkTrace(ctx)
	d.checkNoLeaks(ctx)
	d.stop(ctx)

	statuses := map[string]int{}
	for _, r := range res {
		for _, h := range r.hosts {
			statuses[h]++
		}
	}
	pick := func(f func(scsiRound) time.Duration) string {
		var v []time.Duration
		for _, r := range res {
			v = append(v, f(r))
		}
		slices.Sort(v)
		return fmt.Sprintf("min %v median %v max %v", v[0], v[len(v)/2], v[len(v)-1])
	}
	summary := []string{
		fmt.Sprintf("%d rounds × %d readers: every reader ErrNoDevice; what the kernel said: %v", len(res), depth, statuses),
		"host  device_del → DEVICE_DELETED:          " + pick(func(r scsiRound) time.Duration { return r.deleted }),
		"host  device_del → every reader failed:     " + pick(func(r scsiRound) time.Duration { return r.readersDone }),
		"host  device_del → services gone (inspect): " + pick(func(r scsiRound) time.Duration { return r.freedSeen }),
		"guest removal uevent → last reader failed:  " + pick(func(r scsiRound) time.Duration { return r.lastFail }),
		"guest removal uevent → sg instance freed:   " + pick(func(r scsiRound) time.Duration { return r.freed }),
	}
	for _, s := range summary {
		t.Log(s)
		record("  %s %s", t.Name(), s)
	}
}

// scsiUnplugRound is one round: readers on inst, the disk pulled, every
// reader's error checked, the teardown traced, no leaks; the disk plugged
// back.
func scsiUnplugRound(t *testing.T, ctx context.Context, d *daemon, disk, inst *svcEntry, round, depth int) scsiRound {
	a, m := d.m.Agent, d.m
	var r scsiRound
	status := fmt.Sprintf("/tmp/scsireader%d.status", round)
	_, err := a.Start(ctx, "scsireader", "e2e-app", "-socket", drvSock, "-driver", "sg",
		"-service", strconv.FormatUint(inst.ID, 10), "-read-loop", "0", "-depth", strconv.Itoa(depth),
		"-blocks", strconv.Itoa(readBlocks), "-status", status)
	require.NoError(t, err)
	opened := findLine(d.waitApp(ctx, status, "reading"), "opened")
	require.Equal(t, inst.ID, opened.Service)

	sctx, cancel := step(ctx)
	defer cancel()
	mark := a.UeventMark()
	t0 := time.Now()
	require.NoError(t, m.UnplugSCSI(sctx))
	r.deleted = time.Since(t0)
	res, err := a.Wait(sctx, "scsireader")
	require.NoError(t, err)
	r.readersDone = time.Since(t0)
	lines := parseAppLines(t, res.Stdout)
	var fails []int64
	for _, l := range lines {
		if l.Event != "read-error" {
			continue
		}
		require.True(t, l.NoDevice, "round %d: a reader failed with something else than ErrNoDevice (terminated=%v): %s\n%s",
			round+1, l.Terminated, l.Error, res.Stdout)
		fails = append(fails, l.MonoNs)
		r.hosts = append(r.hosts, kernelCause(l.Error))
	}
	require.Len(t, fails, depth, "every reader reports its error:\n%s\n%s", res.Stdout, res.Stderr)
	require.NotNil(t, findLine(lines, "closed"), "%s", res.Stdout)
	require.Zero(t, res.Exit, "%s %s", res.Stdout, res.Stderr)

	d.waitTree(ctx, "the disk, its sg instance and the user client freed", func(doc *inspectDoc) bool {
		return doc.byID(disk.ID) == nil && doc.byID(inst.ID) == nil && doc.byID(opened.Client) == nil
	})
	r.freedSeen = time.Since(t0)
	evs := d.checkTrace(ctx)
	for _, id := range []uint64{opened.Client, inst.ID, disk.ID} {
		requireTeardown(t, evs, id)
	}
	d.checkNoLeaks(ctx)

	// Guest-side timing against the kernel's first remove uevent of the
	// disk (the agent stamps uevents with CLOCK_MONOTONIC at receipt).
	rm := a.Uevents(mark, Match{Action: "remove", Devpath: "/virtio"})
	require.NotEmpty(t, rm, "no remove uevent of the virtio disk")
	anchor := rm[0].TimeNs
	slices.Sort(fails)
	r.firstFail = time.Duration(fails[0] - anchor).Round(time.Millisecond)
	r.lastFail = time.Duration(fails[len(fails)-1] - anchor).Round(time.Millisecond)
	freedAt := d.freeTime(ctx, inst.ID)
	r.freed = time.Duration(freedAt - anchor).Round(time.Millisecond)

	r.plugAttempts, err = m.PlugSCSI(sctx)
	require.NoError(t, err)
	r.deleted = r.deleted.Round(time.Millisecond)
	r.readersDone = r.readersDone.Round(time.Millisecond)
	r.freedSeen = r.freedSeen.Round(time.Millisecond)
	t.Logf("round %d: device_del %v; host: readers done %v, services gone %v; guest (from the removal uevent): readers failed %v … %v, sg freed %v; %v; replug %d attempt(s)",
		round+1, r.deleted, r.readersDone, r.freedSeen, r.firstFail, r.lastFail, r.freed, r.hosts, r.plugAttempts)
	return r
}

// kernelCause names what the kernel said to a failed read, from the
// error's text: the host status (DID_…) with the device state driver/scsi
// read after it, or the errno.
func kernelCause(msg string) string {
	switch {
	case strings.Contains(msg, "service terminated: no such device (unplugged)"):
		// The read began after drvctl had terminated the service.
		return "after the termination"
	case strings.Contains(msg, "service terminated during the call"):
		return "during the termination: " + kernelCause(msg[strings.Index(msg, "during the call")+len("during the call"):])
	}
	if i := strings.Index(msg, "(DID_"); i >= 0 {
		if j := strings.IndexByte(msg[i:], ')'); j > 0 {
			s := msg[i+1 : i+j]
			if k := strings.Index(msg, "device state "); k >= 0 {
				s += " state=" + strings.Fields(msg[k+len("device state "):])[0]
			}
			return s
		}
	}
	for _, e := range []string{"no such device or address", "no such device", "no such file or directory"} {
		if strings.Contains(msg, "("+e+")") {
			return "errno: " + e
		}
	}
	return msg
}

// freeTime is the time (guest CLOCK_MONOTONIC, ns) of service id's free in
// drvctl monitor's stream.
func (d *daemon) freeTime(ctx context.Context, id uint64) int64 {
	d.t.Helper()
	r, err := d.m.Agent.Exec(ctx, "grep", `"step":"free"`, monitorOut)
	require.NoError(d.t, err)
	sc := bufio.NewScanner(strings.NewReader(r.Stdout))
	for sc.Scan() {
		var e struct {
			Time      float64 `json:"time,string"` // fixed-precision seconds, as a string
			ServiceID uint64  `json:"service_id"`
		}
		require.NoError(d.t, json.Unmarshal(sc.Bytes(), &e))
		if e.ServiceID == id {
			return int64(e.Time * 1e9)
		}
	}
	d.t.Fatalf("no free of #%d in the monitor's stream", id)
	return 0
}

// TestDrvctlUSBGoneBeforeStart pulls the USB stick just after the kernel
// announced it, at delays that sweep the window between the uevent and
// usbstorage's Start opening and claiming the device: a Start that lost
// the race must fail with ErrNoDevice ("no such device", never "not
// found" or a libusb I/O error), and whatever the outcome — start failed,
// started then unplugged, never matched — the trace passes the lifecycle
// checker and nothing leaks. Issue 19's "a USB device gone before Start
// opens it".
func TestDrvctlUSBGoneBeforeStart(t *testing.T) {
	ctx, m := scenario(t, Config{})
	a := m.Agent
	d := startDaemon(t, ctx, m, "--drivers", "usbstorage")
	d.waitTree(ctx, "usbstorage on the coldplugged stick", func(doc *inspectDoc) bool {
		_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		return u != nil
	})
	sctx, cancel := step(ctx)
	require.NoError(t, m.UnplugUSB(sctx))
	cancel()
	stickGone := func(doc *inspectDoc) bool {
		return len(doc.find(func(s *svcEntry) bool {
			return s.Class == "USBDevice" && s.propHex("idVendor") == USBVendor
		})) == 0
	}
	d.waitTree(ctx, "the stick's services freed", stickGone)
	iface := Match{Action: "add", Subsystem: "usb", Env: map[string]string{"DEVTYPE": "usb_interface", "PRODUCT": usbProduct(0x46f4, 0x0001)}}
	outcomes := map[string]int{}
	seen := len(d.checkTrace(ctx))
	for i, delay := range []time.Duration{0, 0, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond,
		40 * time.Millisecond, 80 * time.Millisecond, 160 * time.Millisecond} {
		timed(t, fmt.Sprintf("round%d-%v", i+1, delay), func(t *testing.T) {
			d.t = t
			sctx, cancel := step(ctx)
			defer cancel()
			mark := a.UeventMark()
			_, err := m.PlugUSB(sctx, fmt.Sprintf("GONE%d", i))
			require.NoError(t, err)
			_, err = a.WaitUevent(sctx, mark, iface)
			require.NoError(t, err)
			time.Sleep(delay)
			require.NoError(t, m.UnplugUSB(sctx))
			d.waitTree(ctx, "the stick's services freed", stickGone)
			evs := d.checkTrace(ctx)
			outcome := "never matched"
			for _, e := range evs[seen:] {
				if e.Class != "USBMassStorage" || e.Step.String() != "start" {
					continue
				}
				if e.Err == "" {
					outcome = "started, then unplugged"
					continue
				}
				outcome = "start failed: no such device"
				require.Contains(t, e.Err, "no such device", "a Start that lost the race to the unplug")
				require.NotContains(t, e.Err, "not found")
				t.Logf("start failed: %s", e.Err)
			}
			seen = len(evs)
			outcomes[outcome]++
			d.checkNoLeaks(ctx)
			t.Logf("unplugged %v after the interface's add uevent: %s", delay, outcome)
		})
	}
	d.t = t
	t.Logf("outcomes: %v", outcomes)
	record("  %s outcomes: %v", t.Name(), outcomes)
	d.stop(ctx)
}

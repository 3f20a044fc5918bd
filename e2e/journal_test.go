//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/usb"
)

// The detach journal on the real kernel: `drvctl serve --state-dir` writes
// down every kernel driver it detaches (driver/usb/journal.go), so that when
// the daemon is SIGKILLed while it holds the stick — the kernel drops the
// dead process's usbfs claim but binds no driver again — the next daemon
// binds usb-storage back through sysfs.

const (
	journalDir  = "/var/lib/drvkit"
	journalFile = journalDir + "/usb-detached.json"
	// recoverWarning is what a daemon logs for each driver it re-attached.
	recoverWarning = "re-attached a kernel driver a previous daemon left detached"
)

// readJournal is the guest's journal file; nil when there is none.
func readJournal(t *testing.T, ctx context.Context, a *Agent) []usb.JournalEntry {
	t.Helper()
	r, err := a.Exec(ctx, "cat", journalFile)
	require.NoError(t, err)
	if r.Exit != 0 {
		require.Contains(t, r.Stderr, "No such file", "reading the journal")
		return nil
	}
	var entries []usb.JournalEntry
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &entries), "journal %q", r.Stdout)
	return entries
}

// requireStickJournaled checks that the journal holds exactly the stick's
// interface 0 under usb-storage.
func requireStickJournaled(t *testing.T, ctx context.Context, a *Agent, dev *svcEntry) {
	t.Helper()
	got := readJournal(t, ctx, a)
	require.Len(t, got, 1, "journal: %+v", got)
	e := got[0]
	require.Equal(t, "usb-storage", e.Driver)
	require.Equal(t, 0, e.Interface)
	require.Equal(t, USBVendor, fmt.Sprintf("%04x", e.Vendor))
	require.Equal(t, USBProduct, fmt.Sprintf("%04x", e.Product))
	require.Equal(t, dev.prop("busnum"), fmt.Sprint(e.Bus), "journal %+v vs device %v", e, dev.Properties)
	require.Equal(t, dev.prop("devnum"), fmt.Sprint(e.Address), "journal %+v vs device %v", e, dev.Properties)
}

// usbSG lists the sg nodes of the USB stick's disk (the kernel's
// usb-storage makes one when it binds).
func usbSG(t *testing.T, ctx context.Context, a *Agent) []string {
	t.Helper()
	r, err := a.Exec(ctx, "sh", "-c", `for s in /sys/class/scsi_generic/sg*; do
	[ -e "$s" ] || continue
	case "$(readlink -f $s/device)" in */usb*) echo ${s##*/};; esac
done`)
	require.NoError(t, err)
	return strings.Fields(r.Stdout)
}

// killDuringReads has an application write pattern at lba and keep reads
// of it in flight through the usbstorage instance inst, SIGKILLs the
// daemon, and checks what the kernel then does: it drops the dead daemon's
// usbfs claim and binds no driver, not even after a while; the journal
// still owes usb-storage.
func killDuringReads(t *testing.T, ctx context.Context, d *daemon, inst, dev *svcEntry, lba int, pattern string) {
	t.Helper()
	a := d.m.Agent
	const status = "/tmp/journal-reader.status"
	_, err := a.Exec(ctx, "rm", "-f", status)
	require.NoError(t, err)
	_, err = a.Start(ctx, "reader", "e2e-app", "-socket", drvSock, "-driver", "usbstorage",
		"-write", fmt.Sprint(lba), "-pattern", pattern, "-read-loop", fmt.Sprint(lba), "-depth", fmt.Sprint(readDepth), "-status", status)
	require.NoError(t, err)
	lines := d.waitApp(ctx, status, "reading")
	require.Equal(t, inst.ID, findLine(lines, "opened").Service)
	require.NoError(t, lifecycletest.Validate(d.lifecycle(ctx), false), "the trace so far")

	// SIGKILL: no shutdown, no re-attach.
	mark := a.UeventMark()
	t0 := time.Now()
	require.NoError(t, a.Signal(ctx, "serve", syscall.SIGKILL))
	r, err := a.Wait(ctx, "serve")
	require.NoError(t, err)
	require.Equal(t, "killed", r.Signal, "drvctl serve: %s", tail(r.Stderr, 20))
	require.NotContains(t, r.Stderr, "shutting down", "the daemon had no chance to clean up")
	rr, err := a.Wait(ctx, "reader")
	require.NoError(t, err)
	reads, lost := 0, 0
	for _, l := range parseAppLines(t, rr.Stdout) {
		if l.Event == "read-error" {
			reads += l.Reads
			lost++
			require.Contains(t, l.Error, "connection closed", "a read ends because the daemon died")
		}
	}
	require.Equal(t, readDepth, lost, "every reader lost its daemon: %s", rr.Stdout)
	_, err = a.Wait(ctx, "monitor")
	require.NoError(t, err)

	// The kernel dropped the dead daemon's claim and bound nothing; a
	// second later it still has not (it never re-probes a released
	// interface by itself).
	drv := usbInterfaceDriver(t, ctx, a)
	t.Logf("after SIGKILL during %d reads: interface driver %q (%v after the kill)", reads, drv, time.Since(t0).Round(time.Millisecond))
	require.Equal(t, "", drv, "the kernel re-bound the interface itself after the claim holder died")
	time.Sleep(time.Second)
	require.Equal(t, "", usbInterfaceDriver(t, ctx, a), "the kernel re-bound the interface a while after the claim holder died")
	require.Empty(t, a.Uevents(mark, Match{Action: "bind", Subsystem: "usb", Devpath: "/usb"}))
	require.Empty(t, usbSG(t, ctx, a))
	requireStickJournaled(t, ctx, a, dev)
}

// usbDisks are the SCSIDevice nubs of the kernel's usb-storage.
func usbDisks(doc *inspectDoc) []*svcEntry {
	return doc.find(func(s *svcEntry) bool {
		return s.Class == "SCSIDevice" && strings.Contains(s.prop("devpath"), "/usb")
	})
}

// TestDrvctlDetachJournal: usbstorage claims the stick (usb-storage
// detached, journaled); the daemon is SIGKILLed while an application
// reads; the kernel leaves the interface driverless; a daemon started with
// only sg binds usb-storage back from the journal and serves the kernel's
// disk through sg; a daemon with usbstorage again re-claims, and its
// orderly exit gives usb-storage back and leaves the journal empty.
func TestDrvctlDetachJournal(t *testing.T) {
	ctx, m := scenario(t, Config{USBSerial: "JOURNAL-E2E"})
	a := m.Agent
	sctx, cancel := step(ctx)
	defer cancel()
	_, err := a.WaitUevent(sctx, 0, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
	require.NoError(t, err)
	require.Equal(t, "usb-storage", usbInterfaceDriver(t, sctx, a))
	require.Nil(t, readJournal(t, sctx, a))
	cancel()

	const lba, pattern = 5, "drvkit e2e: journal"
	var stickDev *svcEntry
	if !timed(t, "1-claim-journaled", func(t *testing.T) {
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage", "--state-dir", journalDir)
		doc := d.waitTree(ctx, "USBDevice → USBInterface → usbstorage", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil
		})
		dev, _, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		stickDev = dev
		require.Equal(t, "JOURNAL-E2E", dev.prop("serial"))
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a), "usbstorage holds the interface through usbfs")
		requireStickJournaled(t, ctx, a, dev)
		require.Empty(t, usbSG(t, ctx, a), "usb-storage's disk went with its driver")

		killDuringReads(t, ctx, d, inst, dev, lba, pattern)
	}) {
		return
	}

	if !timed(t, "2-restart-rebinds", func(t *testing.T) {
		mark := a.UeventMark()
		t0 := time.Now()
		d := startDaemon(t, ctx, m, "--drivers", "sg", "--state-dir", journalDir)
		// The daemon bound usb-storage before serving: the bind uevent is
		// there by the time it answers.
		bind, err := a.WaitUevent(ctx, mark, Match{Action: "bind", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DRIVER": "usb-storage"}})
		require.NoError(t, err)
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a))
		sctx, cancel := step(ctx)
		defer cancel()
		blk, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "block", Devpath: "/usb", Env: map[string]string{"DEVTYPE": "disk"}})
		require.NoError(t, err, "/dev/sdX reappears")
		sgEv, err := a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
		require.NoError(t, err, "an sg node reappears")
		t.Logf("daemon answering %v after its start; from the usb-storage bind uevent: %s +%v, %s +%v",
			time.Since(t0).Round(time.Millisecond), blk.Get("DEVNAME"), time.Duration(blk.TimeNs-bind.TimeNs).Round(time.Millisecond),
			sgEv.Get("DEVNAME"), time.Duration(sgEv.TimeNs-bind.TimeNs).Round(time.Millisecond))
		require.NotEmpty(t, usbSG(t, ctx, a))
		for _, n := range []string{blk.Get("DEVNAME"), sgEv.Get("DEVNAME")} {
			r, err := a.Exec(ctx, "sh", "-c", `[ -b "/dev/$1" ] || [ -c "/dev/$1" ]`, "sh", n)
			require.NoError(t, err)
			require.Zero(t, r.Exit, "/dev/%s exists", n)
		}
		require.Empty(t, readJournal(t, ctx, a), "the journal is crossed out")

		// drvctl serves the kernel's disk on the stick through sg.
		doc := d.waitTree(ctx, "SCSIDevice (USB) → sg", func(doc *inspectDoc) bool {
			_, s := scsiDisk(doc, true)
			return s != nil
		})
		disk, inst := scsiDisk(doc, true)
		require.Contains(t, disk.Clients, inst.ID)
		t.Logf("sg serves the kernel's disk on the stick: %s", disk.Name)
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		r := d.stop(ctx)
		require.Contains(t, r.Stderr, recoverWarning)
		require.Contains(t, r.Stderr, "driver=usb-storage")
		require.Equal(t, 1, strings.Count(r.Stderr, recoverWarning))
		for _, l := range strings.Split(r.Stderr, "\n") {
			if strings.Contains(l, recoverWarning) {
				t.Logf("daemon: %s", l)
			}
		}
		require.NoError(t, lifecycletest.Validate(d.lifecycle(ctx), true))
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a), "sg never detached anything")
	}) {
		return
	}

	const pattern2 = "drvkit e2e: journal, second daemon"
	if !timed(t, "3-restart-reclaims-killed-again", func(t *testing.T) {
		// The stick is the kernel's again: usbstorage takes it as from
		// any kernel driver, journaled; the data of the first daemon's
		// client is there. Then this daemon is killed too.
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir)
		doc := d.waitTree(ctx, "usbstorage re-claims the stick, and the kernel's disk on it is gone", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil && len(usbDisks(doc)) == 0
		})
		dev, _, inst := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		require.Equal(t, stickDev.prop("devnum"), dev.prop("devnum"), "the same device, never re-enumerated")
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a))
		requireStickJournaled(t, ctx, a, dev)
		got := findLine(d.app(ctx, "-driver", "usbstorage", "-read", fmt.Sprint(lba)), "read")
		require.Equal(t, pattern, got.Data, "what the killed daemon's client wrote is on the stick")
		d.checkTrace(ctx)
		killDuringReads(t, ctx, d, inst, dev, lba, pattern2)
	}) {
		return
	}

	if !timed(t, "4-restart-with-usbstorage", func(t *testing.T) {
		// usbstorage is loaded again right away: the daemon first gives
		// usb-storage back (the journal does not know what will match),
		// then usbstorage takes the stick from it like from any kernel
		// driver.
		mark := a.UeventMark()
		d := startDaemon(t, ctx, m, "--drivers", "usbstorage,sg", "--state-dir", journalDir)
		doc := d.waitTree(ctx, "usbstorage re-claims the stick, and the kernel's disk on it is gone", func(doc *inspectDoc) bool {
			_, _, u := usbStick(doc, USBVendor, USBProduct, "usbstorage")
			return u != nil && len(usbDisks(doc)) == 0
		})
		dev, _, _ := usbStick(doc, USBVendor, USBProduct, "usbstorage")
		_, err := a.WaitUevent(ctx, mark, Match{Action: "bind", Subsystem: "usb", Devpath: "/usb", Env: map[string]string{"DRIVER": "usb-storage"}})
		require.NoError(t, err, "usb-storage re-bound from the journal")
		require.Equal(t, "usbfs", usbInterfaceDriver(t, ctx, a))
		requireStickJournaled(t, ctx, a, dev)
		got := findLine(d.app(ctx, "-driver", "usbstorage", "-read", fmt.Sprint(lba)), "read")
		require.Equal(t, pattern2, got.Data, "what the second killed daemon's client wrote is on the stick")
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)

		// An orderly exit gives usb-storage back and owes nothing.
		mark = a.UeventMark()
		r := d.stop(ctx)
		require.Equal(t, 1, strings.Count(r.Stderr, recoverWarning), "daemon log:\n%s", tail(quiet(r.Stderr), 40))
		require.NoError(t, lifecycletest.Validate(d.lifecycle(ctx), true))
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a))
		require.Empty(t, readJournal(t, ctx, a))
		sctx, cancel := step(ctx)
		defer cancel()
		_, err = a.WaitUevent(sctx, mark, Match{Action: "add", Subsystem: "scsi_generic", Devpath: "/usb"})
		require.NoError(t, err, "the kernel's sg node is back")
		dm, err := a.Exec(ctx, "sh", "-c", "dmesg | grep -iE 'usb-storage|reset|sd [0-9]|uas|usbfs' | tail -n 30")
		require.NoError(t, err)
		t.Logf("kernel log:\n%s", dm.Stdout)
	}) {
		return
	}

	timed(t, "5-entry-for-a-driver-still-bound", func(t *testing.T) {
		// A daemon killed after writing its entry ahead of the detach but
		// before detaching leaves an entry for a driver still bound: the
		// next daemon finds it bound (sysfs), changes nothing, does not
		// claim to have re-attached anything, and crosses it out.
		e := []usb.JournalEntry{{Bus: atoi(t, stickDev.prop("busnum")), Address: atoi(t, stickDev.prop("devnum")),
			Vendor: 0x46f4, Product: 0x0001, Interface: 0, Driver: "usb-storage"}}
		b, err := json.Marshal(e)
		require.NoError(t, err)
		r, err := a.Exec(ctx, "sh", "-c", `printf '%s' "$1" >`+journalFile, "sh", string(b))
		require.NoError(t, err)
		require.Zero(t, r.Exit, r.Stderr)
		require.Len(t, readJournal(t, ctx, a), 1)
		mark := a.UeventMark()
		d := startDaemon(t, ctx, m, "--drivers", "sg", "--state-dir", journalDir)
		require.Empty(t, readJournal(t, ctx, a), "crossed out before serving")
		d.waitTree(ctx, "SCSIDevice (USB) → sg", func(doc *inspectDoc) bool {
			_, s := scsiDisk(doc, true)
			return s != nil
		})
		d.checkTrace(ctx)
		d.checkNoLeaks(ctx)
		r = d.stop(ctx)
		log := quiet(r.Stderr)
		require.Zero(t, strings.Count(log, recoverWarning), "nothing was re-attached:\n%s", tail(log, 10))
		require.Zero(t, strings.Count(log, "re-attaching kernel drivers left detached"), "no error either:\n%s", tail(log, 10))
		require.Empty(t, a.Uevents(mark, Match{Subsystem: "usb", Devpath: "/usb"}), "no unbind, no bind")
		require.Equal(t, "usb-storage", usbInterfaceDriver(t, ctx, a))
	})
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err, "%q", s)
	return n
}

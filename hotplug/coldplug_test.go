package hotplug_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/hotplugtest"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

const qemuSysfs = "testdata/sysfs/qemu-sysfs.txt"

func drain(t *testing.T, s hotplug.Source) []hotplug.Event {
	t.Helper()
	var out []hotplug.Event
	for {
		ev, err := s.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		out = append(out, ev)
	}
}

func TestColdplugQEMU(t *testing.T) {
	root := hotplugtest.QEMUSysfs(t, qemuSysfs)
	cp, err := hotplug.NewColdplug(root, buses.Classes())
	require.NoError(t, err)
	defer cp.Close()
	evs := drain(t, cp)

	var got []string
	for _, ev := range evs {
		require.Equal(t, hotplug.ActionAdd, ev.Action)
		require.Equal(t, hotplug.OriginColdplug, ev.Origin)
		got = append(got, fmt.Sprintf("%s %s %s %s", ev.Subsystem, ev.DevType, ev.Driver, ev.Name()))
	}
	// Parents before children: every device comes after the devices its
	// path is under.
	for i, ev := range evs {
		for _, later := range evs[i+1:] {
			require.False(t, strings.HasPrefix(ev.DevPath, later.DevPath+"/"), "%s before its parent %s", ev.DevPath, later.DevPath)
		}
	}
	require.ElementsMatch(t, []string{
		"usb usb_device usb usb1", "usb usb_device usb usb2", "usb usb_device usb usb3",
		"usb usb_interface hub 1-0:1.0", "usb usb_interface hub 2-0:1.0", "usb usb_interface hub 3-0:1.0",
		"usb usb_device usb 2-1", "usb usb_interface usb-storage 2-1:1.0",
		"scsi scsi_host  host0", "scsi scsi_host  host1",
		"scsi scsi_target  target0:0:0", "scsi scsi_target  target1:0:0",
		"scsi scsi_device sd 0:0:0:0", "scsi scsi_device sd 1:0:0:0",
		"scsi_generic   sg0", "scsi_generic   sg1",
	}, got)

	// The typed views work on coldplug events, and the strings the uevent
	// does not carry are read from the (fake) sysfs.
	for _, ev := range evs {
		switch ev.Name() {
		case "2-1":
			d, err := ev.USBDevice()
			require.NoError(t, err)
			require.NoError(t, d.ReadAttrs(root, ev.DevPath))
			require.Equal(t, hotplug.USBDevice{Port: "2-1", BusNum: 2, DevNum: 2, Vendor: 0x46f4, Product: 1,
				DevName: "bus/usb/002/002", Manufacturer: "QEMU", ProductName: "QEMU USB HARDDRIVE", Serial: "PROBE123", Speed: "5000"}, d)
		case "0:0:0:0":
			d, err := ev.SCSIDevice()
			require.NoError(t, err)
			require.NoError(t, d.ReadAttrs(root, ev.DevPath))
			require.Equal(t, hotplug.SCSIDevice{Type: 0, Vendor: "QEMU", Model: "QEMU HARDDISK", Revision: "2.5+"}, d)
		case "sg1":
			g, err := ev.SCSIGeneric()
			require.NoError(t, err)
			require.Equal(t, "/dev/sg1", g.DevNode)
			require.Equal(t, hotplug.HCTL{Host: 1}, g.HCTL)
		}
	}
}

func TestColdplugBlockAndMissing(t *testing.T) {
	root := hotplugtest.QEMUSysfs(t, qemuSysfs)
	evs, err := hotplug.Walk(root, []hotplug.Class{hotplug.ClassBlock, {Dir: "bus/nonexistent/devices", Subsystem: "x"}}, hotplug.OriginColdplug)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	b, err := evs[0].Block()
	require.NoError(t, err)
	require.Equal(t, "sda", b.Name)
	require.Equal(t, uint64(1), b.DiskSeq)

	// A device directory without a uevent file is an error that names it.
	require.NoError(t, os.Remove(filepath.Join(root, strings.TrimPrefix(evs[1].DevPath, "/"), "uevent")))
	_, err = hotplug.Walk(root, []hotplug.Class{hotplug.ClassBlock}, hotplug.OriginColdplug)
	var oe *hotplug.OpError
	require.ErrorAs(t, err, &oe)
	require.Contains(t, err.Error(), "sdb/uevent")

	_, err = hotplug.NewColdplug(filepath.Join(root, "nope"), nil)
	require.ErrorAs(t, err, &oe)
}

func TestColdplugRealSysfs(t *testing.T) {
	// This machine has no USB or SCSI, but it has block devices.
	evs, err := hotplug.Walk("/sys", []hotplug.Class{hotplug.ClassBlock}, hotplug.OriginColdplug)
	require.NoError(t, err)
	if len(evs) == 0 {
		t.Skip("no block devices in /sys/class/block")
	}
	for _, ev := range evs {
		_, err := ev.Block()
		require.NoError(t, err, "%v", ev)
	}
}

func TestColdplugClose(t *testing.T) {
	root := hotplugtest.QEMUSysfs(t, qemuSysfs)
	cp, err := hotplug.NewColdplug(root, buses.Classes())
	require.NoError(t, err)
	require.NoError(t, cp.Close())
	_, err = cp.Next(context.Background())
	require.ErrorIs(t, err, hotplug.ErrClosed)
}

func ExampleNewColdplug() {
	cp, err := hotplug.NewColdplug("/sys", []hotplug.Class{usbbus.Devices})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cp.Close()
	for {
		ev, err := cp.Next(context.Background())
		if err != nil {
			break // io.EOF: every device present was reported
		}
		if d, err := ev.USBDevice(); err == nil {
			fmt.Printf("%s %04x:%04x\n", d.Port, d.Vendor, d.Product)
		}
	}
}

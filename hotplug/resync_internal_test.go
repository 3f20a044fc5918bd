package hotplug

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug/hotplugtest"
)

// TestDiff checks the resync diff on the QEMU guest's sysfs: a device that
// vanished (with its children) is removed children first, a new one is
// added, a replaced one (same path, other identity) is removed and re-added.
// qemuClasses are the classes of the USB and SCSI buses (an internal test
// cannot import the adapters: they import hotplug).
var qemuClasses = []Class{{Dir: "bus/usb/devices", Subsystem: "usb"}, {Dir: "bus/scsi/devices", Subsystem: "scsi"},
	{Dir: "class/scsi_generic", Subsystem: "scsi_generic"}}

func TestDiff(t *testing.T) {
	root := hotplugtest.QEMUSysfs(t, "testdata/sysfs/qemu-sysfs.txt")
	before, err := walk(root, qemuClasses, OriginColdplug)
	require.NoError(t, err)
	known := map[string]device{}
	for _, d := range before {
		known[d.DevPath] = d
	}
	require.Empty(t, diff(known, before, OriginResync))

	// Unplug the stick: drop its bus entries (what the kernel removes).
	for _, l := range []string{"bus/usb/devices/2-1", "bus/usb/devices/2-1:1.0", "bus/scsi/devices/host1",
		"bus/scsi/devices/target1:0:0", "bus/scsi/devices/1:0:0:0", "class/scsi_generic/sg1"} {
		require.NoError(t, os.Remove(filepath.Join(root, l)))
	}
	// sg0 was replaced by another device at the same path.
	sg0 := filepath.Join(root, "class/scsi_generic/sg0/uevent")
	require.NoError(t, os.WriteFile(sg0, []byte("MAJOR=21\nMINOR=7\nDEVNAME=sg0\n"), 0o644))
	after, err := walk(root, qemuClasses, OriginColdplug)
	require.NoError(t, err)
	fix := diff(known, after, OriginResync)
	var got []string
	for _, ev := range fix {
		require.Equal(t, OriginResync, ev.Origin)
		got = append(got, ev.Action.String()+" "+ev.Name())
	}
	require.Equal(t, []string{
		"remove sg1", "remove sg0", "remove 1:0:0:0", "remove target1:0:0", "remove host1",
		"remove 2-1:1.0", "remove 2-1", "add sg0",
	}, got)
	// A synthesized remove keeps the device's environment, so typed views
	// still work on it.
	d, err := fix[6].USBDevice()
	require.NoError(t, err)
	require.Equal(t, uint16(0x46f4), d.Vendor)
	require.Equal(t, uint64(0), fix[6].Seqnum)
	require.False(t, strings.Contains(fix[6].env, "SEQNUM"))
}

package hotplugtest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/hotplug/hotplugtest"
)

func TestBuildSysfs(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, hotplugtest.BuildSysfs(dir, strings.NewReader(`# comment
SYSDIR /sys/bus/usb/devices/2-1 -> /sys/devices/pci0000:00/usb2/2-1
SYSATTR /sys/devices/pci0000:00/usb2/2-1/serial=PROBE123
SYSLINK /sys/devices/pci0000:00/usb2/2-1/driver -> /sys/bus/usb/drivers/usb
SYSUEVENT /sys/devices/pci0000:00/usb2/2-1 DEVTYPE=usb_device
SYSUEVENT /sys/devices/pci0000:00/usb2/2-1 BUSNUM=002
`)))
	real, err := filepath.EvalSymlinks(filepath.Join(dir, "bus/usb/devices/2-1"))
	require.NoError(t, err)
	want, _ := filepath.EvalSymlinks(filepath.Join(dir, "devices/pci0000:00/usb2/2-1"))
	require.Equal(t, want, real)
	b, err := os.ReadFile(filepath.Join(real, "uevent"))
	require.NoError(t, err)
	require.Equal(t, "DEVTYPE=usb_device\nBUSNUM=002\n", string(b))
	b, err = os.ReadFile(filepath.Join(real, "serial"))
	require.NoError(t, err)
	require.Equal(t, "PROBE123\n", string(b))
	sub, err := os.Readlink(filepath.Join(real, "subsystem"))
	require.NoError(t, err)
	require.Equal(t, "usb", filepath.Base(sub))
}

func TestBuildSysfsErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SYSATTR /etc/passwd=x", "not under /sys"},
		{"SYSATTR /sys/../../etc/x=1", "escapes /sys"},
		{"SYSDIR /sys/a", "want PATH -> TARGET"},
		{"SYSUEVENT /sys/devices/x", "want PATH KEY=VALUE"},
		{"\nBOGUS x", "line 2: unknown line kind"},
	} {
		err := hotplugtest.BuildSysfs(t.TempDir(), strings.NewReader(tc.in))
		require.ErrorContains(t, err, tc.want, tc.in)
	}
}

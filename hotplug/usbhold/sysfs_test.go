package usbhold

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeSysfs lays out the attributes the hold reads and writes as plain
// files (a real sysfs refuses what these accept; the fake kernel in
// kernel_test.go plays the kernel's rules).
func fakeSysfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	dev := filepath.Join(root, "bus", "usb", "devices")
	files := map[string]string{
		"usb1/interface_authorized_default": "1\n",
		"usb2/interface_authorized_default": "0\n",
		"2-1/busnum":                        "2\n",
		"2-1/devnum":                        "3\n",
		"2-1/idVendor":                      "46f4\n",
		"2-1/idProduct":                     "0001\n",
		"2-1:1.0/authorized":                "0\n",
		"2-0:1.0/authorized":                "1\n",
		"1-0:1.0/authorized":                "1\n",
	}
	for p, v := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(dev, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dev, p), []byte(v), 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "bus", "usb", "drivers", "hub"), 0o755))
	require.NoError(t, os.Symlink("../../../bus/usb/drivers/hub", filepath.Join(dev, "2-0:1.0", "driver")))
	require.NoError(t, os.WriteFile(filepath.Join(root, "bus", "usb", "drivers_probe"), nil, 0o644))
	require.NoError(t, os.Symlink("../notes", filepath.Join(dev, "not-a-device")))
	return root
}

func TestSysfs(t *testing.T) {
	root := fakeSysfs(t)
	s := sysfs{root: root}
	hubs, err := s.RootHubs()
	require.NoError(t, err)
	require.Equal(t, []string{"usb1", "usb2"}, hubs)
	on, err := s.AuthorizedDefault("usb1")
	require.NoError(t, err)
	require.True(t, on)
	require.NoError(t, s.SetAuthorizedDefault("usb1", false))
	on, err = s.AuthorizedDefault("usb1")
	require.NoError(t, err)
	require.False(t, on)

	ifaces, err := s.Interfaces(2)
	require.NoError(t, err)
	require.Equal(t, []string{"2-0:1.0", "2-1:1.0"}, ifaces)
	ok, err := s.Authorized("2-1:1.0")
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, s.Authorize("2-1:1.0"))
	ok, err = s.Authorized("2-1:1.0")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Probe("2-1:1.0"))
	b, err := os.ReadFile(filepath.Join(root, "bus", "usb", "drivers_probe"))
	require.NoError(t, err)
	require.Equal(t, "2-1:1.0", string(b))

	drv, err := s.Driver("2-0:1.0")
	require.NoError(t, err)
	require.Equal(t, "hub", drv)
	drv, err = s.Driver("2-1:1.0")
	require.NoError(t, err)
	require.Empty(t, drv)
	_, err = s.Driver("2-9:1.0")
	require.True(t, isGone(err), "%v", err)

	id, err := s.Device("2-1:1.0")
	require.NoError(t, err)
	require.Equal(t, Held{Interface: "2-1:1.0", Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1}, id)

	// Writes go to existing attributes only.
	err = s.Authorize("2-9:1.0")
	require.True(t, isGone(err), "%v", err)
	_, err = os.Stat(filepath.Join(root, "bus", "usb", "devices", "2-9:1.0"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, os.WriteFile(filepath.Join(root, "bus", "usb", "devices", "usb2", "interface_authorized_default"), []byte("2\n"), 0o644))
	_, err = s.AuthorizedDefault("usb2")
	require.ErrorContains(t, err, "not 0 or 1")
}

// The hold on the sysfs layout, end to end: gate, hold, give back, lift.
func TestHoldOnSysfsFiles(t *testing.T) {
	root := fakeSysfs(t)
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	state := filepath.Join(t.TempDir(), "state", "usb-hold.json")
	h, _, err := newHold(sysfs{root: root}, Config{State: state, Personalities: ps.get})
	require.NoError(t, err)
	require.NoError(t, h.Sync())
	require.Equal(t, []string{"usb1"}, h.Gated(), "usb2 denies by default already")
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(root, "bus", "usb", p))
		require.NoError(t, err)
		return strings.TrimSpace(string(b))
	}
	require.Equal(t, "0", read("devices/usb1/interface_authorized_default"))
	require.NoError(t, h.Close())
	require.Equal(t, "1", read("devices/usb1/interface_authorized_default"))
	_, err = os.Stat(state)
	require.ErrorIs(t, err, os.ErrNotExist)
}

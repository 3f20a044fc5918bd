package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

// TestSimBusOpenSGBeforeItsEvent: the bridge can start the sg driver on a
// node it learned from the simulator's sysfs before the node's own event
// went through the bus (a race that made the end-to-end test flaky).
func TestSimBusOpenSGBeforeItsEvent(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "devices/pci0000:00/0000:00:05.0/virtio1/host0/target0:0:0/0:0:0:3/scsi_generic/sg3")
	require.NoError(t, os.MkdirAll(dev, 0o755))
	link := filepath.Join(root, "class/scsi_generic/sg3")
	require.NoError(t, os.MkdirAll(filepath.Dir(link), 0o755))
	rel, err := filepath.Rel(filepath.Dir(link), dev)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(rel, link))

	fake := usbtest.New()
	defer fake.Close()
	b := newSimBus(nil, fake, root)
	tr, err := b.openSG("/dev/sg3")
	require.NoError(t, err)
	require.NoError(t, tr.Close())
	require.Contains(t, b.disks, "scsi:0:0:0:3")

	_, err = b.openSG("/dev/sg9")
	require.ErrorIs(t, err, scsi.ErrNoDevice)
}

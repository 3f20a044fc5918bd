package scsi

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The state file is resolved at open through the class link, to the
// device's own directory: after an unplug the class link is gone first.
func TestSGStateFileResolvesTheDevice(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "devices", "host0", "target0:0:0", "0:0:0:0")
	require.NoError(t, os.MkdirAll(dev, 0o755))
	class := filepath.Join(root, "class", "scsi_generic", "sg3")
	require.NoError(t, os.MkdirAll(class, 0o755))
	require.NoError(t, os.Symlink(dev, filepath.Join(class, "device")))
	prev := sysfsClassSG
	sysfsClassSG = filepath.Join(root, "class", "scsi_generic")
	t.Cleanup(func() { sysfsClassSG = prev })
	require.Equal(t, filepath.Join(dev, "state"), sgStateFile("/dev/sg3"))
	require.Empty(t, sgStateFile("/dev/sg9"))
}

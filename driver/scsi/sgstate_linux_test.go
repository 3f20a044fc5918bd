package scsi

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
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

// An SG_IO that fails with an errno: ENODEV/ENXIO (sg let go of the
// device, the queue is dying) are always ErrNoDevice; an I/O-ish errno is
// ErrNoDevice only when the device's state shows it gone, else its own
// class; anything else is passed on.
func TestSGIoctlErrno(t *testing.T) {
	dir := t.TempDir()
	running, deleted := filepath.Join(dir, "running"), filepath.Join(dir, "deleted")
	require.NoError(t, os.WriteFile(running, []byte("running\n"), 0o644))
	require.NoError(t, os.WriteFile(deleted, []byte("deleted\n"), 0o644))
	for _, tc := range []struct {
		errno     syscall.Errno
		stateFile string
		is        error // nil: none of the sentinels
	}{
		{unix.ENODEV, running, ErrNoDevice},
		{unix.ENXIO, running, ErrNoDevice},
		{unix.ENODEV, "", ErrNoDevice},
		{unix.EIO, running, nil},
		{unix.EIO, deleted, ErrNoDevice},
		{unix.EIO, filepath.Join(dir, "removed"), ErrNoDevice},
		{unix.EIO, "", nil},
		{unix.ETIMEDOUT, running, ErrTimeout},
		{unix.ETIMEDOUT, deleted, ErrNoDevice},
		{unix.EBUSY, running, ErrBusy},
		{unix.EAGAIN, deleted, ErrNoDevice},
		{unix.EINVAL, deleted, nil},
		{unix.ENOMEM, deleted, nil},
	} {
		err := ioctlErr(tc.errno, tc.stateFile, 0)
		require.ErrorIs(t, err, tc.errno, "%v keeps its errno", tc.errno)
		for _, s := range []error{ErrNoDevice, ErrTimeout, ErrBusy} {
			require.Equal(t, s == tc.is, errors.Is(err, s), "%v with %q: %v", tc.errno, tc.stateFile, err)
		}
	}
}

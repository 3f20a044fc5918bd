//go:build linux

package hid

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The sized ioctls against the numbers the kernel headers give for a size.
func TestIoctlNumbers(t *testing.T) {
	if unix.HIDIOCGRAWINFO != 0x80084803 {
		t.Skip("architecture with other ioctl direction bits")
	}
	require.Equal(t, uintptr(0xc0084806), iocHID(0x06, 8))  // HIDIOCSFEATURE(8)
	require.Equal(t, uintptr(0xc0404807), iocHID(0x07, 64)) // HIDIOCGFEATURE(64)
}

// newPipeRaw is a raw device over a pipe: no hidraw node on this machine,
// but reads, deadlines and close behave as on one.
func newPipeRaw(t *testing.T) (*raw, *os.File) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
	d, err := newRaw(os.NewFile(uintptr(p[0]), "pipe"), "/dev/hidraw9")
	require.NoError(t, err)
	w := os.NewFile(uintptr(p[1]), "pipe-w")
	t.Cleanup(func() { w.Close(); d.Close() })
	return d, w
}

func TestRawReadInput(t *testing.T) {
	d, w := newPipeRaw(t)
	_, err := w.Write([]byte{1, 2, 3})
	require.NoError(t, err)
	buf := make([]byte, 8)
	n, err := d.ReadInput(context.Background(), buf)
	require.NoError(t, err)
	require.Equal(t, []byte{1, 2, 3}, buf[:n])

	// A context ends a read waiting for a report, and the next read works.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err = d.ReadInput(ctx, buf)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	_, err = w.Write([]byte{4})
	require.NoError(t, err)
	n, err = d.ReadInput(context.Background(), buf)
	require.NoError(t, err)
	require.Equal(t, []byte{4}, buf[:n])

	// Close ends a waiting read with ErrClosed.
	done := make(chan error, 1)
	go func() { _, err := d.ReadInput(context.Background(), buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, d.Close())
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the read")
	}
}

// The writer going away is what an unplug looks like to a reader: EOF on a
// pipe, EIO on hidraw; both are ErrNoDevice.
func TestRawReadGone(t *testing.T) {
	d, w := newPipeRaw(t)
	require.NoError(t, w.Close())
	_, err := d.ReadInput(context.Background(), make([]byte, 8))
	require.ErrorIs(t, err, ErrNoDevice)
	require.ErrorContains(t, err, "read /dev/hidraw9: no such device")
	require.ErrorIs(t, mapErrno(unix.EIO), ErrNoDevice)
	require.ErrorIs(t, mapErrno(unix.ENODEV), ErrNoDevice)
}

func TestHidrawOpenMissing(t *testing.T) {
	_, err := Hidraw{}.Open("/dev/hidraw-does-not-exist")
	require.ErrorIs(t, err, ErrNoDevice)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "open", oe.Op)
}

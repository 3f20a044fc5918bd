//go:build linux && cgo

package usb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/google/gousb"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestGousbRealEnumerate runs the real libusb path through drvkit's
// backend: context created on demand, enumeration, open of an absent
// device, context closed again (goleak in TestMain checks the event
// goroutine ended).
func TestGousbRealEnumerate(t *testing.T) {
	ctx := context.Background()
	b := NewGousb()
	defer func() { require.NoError(t, b.Close()) }()
	require.False(t, b.contextActive(), "libusb must not start before it is needed")

	devs, err := b.Devices(ctx)
	require.NoError(t, err)
	t.Logf("libusb lists %d devices on this machine", len(devs))
	for _, d := range devs {
		t.Logf("  %s class %02x interfaces %d", d, d.Class, len(d.Interfaces))
	}
	require.False(t, b.contextActive(), "libusb context must close after enumeration")

	// 0000:0000 is never a real device: OpenDevices finds nothing and
	// drvkit must say so instead of returning a nil device.
	_, err = b.Open(ctx, Selector{Vendor: 0, Product: 0})
	require.ErrorIs(t, err, ErrNotFound)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "open 0000:0000", oe.Op)
	require.NotErrorIs(t, err, ErrNoDevice, "a VID:PID that matches nothing is not a device that went")
	// A bus/address is a device that was enumerated: not there any more,
	// it was unplugged (what a driver whose device vanished before its
	// Start opened it reports).
	_, err = b.Open(ctx, Selector{Bus: 255, Address: 255})
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, err, ErrNoDevice)
	require.False(t, b.contextActive())
	require.NoError(t, b.ReattachAll())
}

func TestGousbContextRefcount(t *testing.T) {
	b := NewGousb()
	c1, err := b.acquire()
	require.NoError(t, err)
	c2, err := b.acquire()
	require.NoError(t, err)
	require.Same(t, c1, c2)
	require.NoError(t, b.release())
	require.True(t, b.contextActive())
	require.NoError(t, b.release())
	require.False(t, b.contextActive())
	require.NoError(t, b.Close())
	_, err = b.Devices(context.Background())
	require.ErrorIs(t, err, ErrClosed)
}

func TestGousbInitPanicRecovered(t *testing.T) {
	b := NewGousb()
	defer b.Close()
	// gousb.NewContext panics with the libusb error when libusb_init fails.
	b.newContext = func() *gousb.Context { panic(gousb.ErrorAccess) }
	_, err := b.Devices(context.Background())
	require.ErrorIs(t, err, ErrInit)
	require.ErrorContains(t, err, "bad access")
	_, err = b.Open(context.Background(), Selector{Vendor: 1, Product: 1})
	require.ErrorIs(t, err, ErrInit)
	require.False(t, b.contextActive())
	b.mu.Lock()
	require.Zero(t, b.users)
	b.mu.Unlock()

	b.newContext = gousb.NewContext
	_, err = b.Devices(context.Background())
	require.NoError(t, err)
}

func TestMapGousb(t *testing.T) {
	tests := []struct {
		in   error
		want error
	}{
		{gousb.ErrorNoDevice, ErrNoDevice},
		{gousb.ErrorBusy, ErrBusy},
		{gousb.ErrorTimeout, ErrTimeout},
		{gousb.ErrorNotFound, ErrNotFound},
		{gousb.ErrorPipe, ErrStall},
		{gousb.ErrorAccess, ErrAccess},
		{gousb.TransferNoDevice, ErrNoDevice},
		{gousb.TransferTimedOut, ErrTimeout},
		{gousb.TransferStall, ErrStall},
		{gousb.TransferOverflow, ErrOverflow},
		// gousb v1.1.3 wraps claim failures with %v.
		{fmt.Errorf("failed to claim interface 0 on vid=1,pid=2: %v", gousb.ErrorBusy), ErrBusy},
		{fmt.Errorf("failed to set alternate config: %v", gousb.ErrorNoDevice), ErrNoDevice},
	}
	for _, tt := range tests {
		got := mapGousb(tt.in)
		require.ErrorIs(t, got, tt.want, "%v", tt.in)
	}
	other := errors.New("something else")
	require.Equal(t, other, mapGousb(other))
}

// TestUsbfsIoctlNumbers checks the usbfs request numbers and struct sizes
// against <linux/usbdevice_fs.h>.
func TestUsbfsIoctlNumbers(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("SKIPPED: no C compiler")
	}
	if _, err := os.Stat("/usr/include/linux/usbdevice_fs.h"); err != nil {
		t.Skip("SKIPPED: <linux/usbdevice_fs.h> missing (install linux-libc-dev)")
	}
	src := `#include <stdio.h>
#include <sys/ioctl.h>
#include <linux/usbdevice_fs.h>
int main(void){printf("%lu %lu %u %u %zu %zu\n",(unsigned long)USBDEVFS_GETDRIVER,(unsigned long)USBDEVFS_IOCTL,
(unsigned)USBDEVFS_DISCONNECT,(unsigned)USBDEVFS_CONNECT,sizeof(struct usbdevfs_getdriver),sizeof(struct usbdevfs_ioctl));return 0;}`
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "u.c"), []byte(src), 0o644))
	out, err := exec.Command(cc, "-o", filepath.Join(dir, "u"), filepath.Join(dir, "u.c")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(filepath.Join(dir, "u")).Output()
	require.NoError(t, err)
	want := fmt.Sprintf("%d %d %d %d %d %d\n", usbdevfsGetDriver, usbdevfsIoctl, usbdevfsDisconnect, usbdevfsConnect,
		unsafe.Sizeof(usbdevfsGetdriver{}), unsafe.Sizeof(usbdevfsIoctlArg{}))
	require.Equal(t, want, string(out))
}

func TestUsbfsMissingNode(t *testing.T) {
	_, err := openUsbfs(255, 255)
	require.ErrorIs(t, err, ErrNoDevice)
}

// Every Open enumerates in a context of its own, even while another
// context is alive: libusb learns of devices plugged after a context
// started only from udevd, and without udevd (the QEMU guest of make e2e)
// a shared context kept alive by one open stick never found a second
// device plugged later (TestDrvctlGadgetPersonality caught it: "usb: open
// 003/002: not found").
func TestGousbOpenUsesFreshContext(t *testing.T) {
	b := NewGousb()
	defer func() { require.NoError(t, b.Close()) }()
	var made []*gousb.Context
	b.newContext = func() *gousb.Context {
		c := gousb.NewContext()
		made = append(made, c)
		return c
	}
	// A context alive for something else (an enumeration in progress).
	shared, err := b.acquire()
	require.NoError(t, err)
	for range 2 {
		_, err := b.Open(context.Background(), Selector{Bus: 255, Address: 255})
		require.ErrorIs(t, err, ErrNotFound)
	}
	require.Len(t, made, 3, "each Open started its own context")
	require.NotSame(t, shared, made[1])
	require.NotSame(t, made[1], made[2])
	require.NoError(t, b.release())
	require.False(t, b.contextActive())
	// goleak in TestMain checks that the Opens' contexts were closed.
}

// A listed device whose open failed: when its usbfs node is gone or says
// ENODEV the device is gone, whatever libusb called the failure
// (LIBUSB_ERROR_IO is what usbfs's ENODEV becomes); otherwise the libusb
// error stands, and a VID:PID selector is never probed.
func TestGousbOpenFailedOnAGoneDevice(t *testing.T) {
	gone := func(int, int) error { return fmt.Errorf("%w (%v)", ErrNoDevice, unix.ENODEV) }
	there := func(int, int) error { return nil }
	denied := func(int, int) error { return fmt.Errorf("%w (%v)", ErrAccess, unix.EACCES) }
	byAddr := Selector{Bus: 2, Address: 23}
	for _, tc := range []struct {
		sel   Selector
		err   error
		probe func(int, int) error
		is    error
		not   error
	}{
		{byAddr, gousb.ErrorIO, gone, ErrNoDevice, nil},
		{byAddr, gousb.ErrorAccess, gone, ErrNoDevice, ErrAccess},
		{byAddr, gousb.ErrorIO, there, nil, ErrNoDevice},
		{byAddr, gousb.ErrorAccess, denied, ErrAccess, ErrNoDevice},
		{byAddr, gousb.ErrorNoDevice, there, ErrNoDevice, nil},
		{Selector{Vendor: 0x46f4, Product: 1}, gousb.ErrorIO, gone, nil, ErrNoDevice},
	} {
		probed := false
		err := openFailed(tc.sel, tc.err, func(bus, addr int) error {
			probed = true
			require.Equal(t, tc.sel.Bus, bus)
			require.Equal(t, tc.sel.Address, addr)
			return tc.probe(bus, addr)
		})
		if tc.is != nil {
			require.ErrorIs(t, err, tc.is, "%v", err)
		}
		if tc.not != nil {
			require.NotErrorIs(t, err, tc.not, "%v", err)
		}
		require.ErrorContains(t, err, tc.err.Error(), "the libusb error is kept")
		if tc.sel.Bus == 0 {
			require.False(t, probed, "a VID:PID selector names no node to probe")
		}
	}
}

//go:build linux

package hid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// A report is its ID byte and data: hidraw refuses anything shorter with
// EINVAL (a keyboard's bare LED byte was, in the QEMU guest), so the
// transport refuses it first, saying why.
func TestRawWriteChecksAndErrors(t *testing.T) {
	d, _ := newPipeRaw(t)
	for _, r := range [][]byte{nil, {2}} {
		err := d.WriteOutput(r)
		require.ErrorIs(t, err, ErrReportSize, "%x", r)
		err = d.SetFeature(r)
		require.ErrorIs(t, err, ErrReportSize, "%x", r)
	}
	_, err := d.GetFeature(1, make([]byte, 1))
	require.ErrorIs(t, err, ErrReportSize)
	// The node's own error names the operation and the node once (the
	// read end of a pipe refuses writes).
	err = d.WriteOutput([]byte{0, 2})
	require.ErrorIs(t, err, unix.EBADF)
	require.EqualError(t, err, "write /dev/hidraw9: bad file descriptor")
}

// hidrawE2EEnv marks a machine whose hidraw nodes a test may write to and
// where no one types: the QEMU end-to-end guest (TestHIDKeyboard sets it).
const hidrawE2EEnv = "DRVKIT_HIDRAW_E2E"

// TestHidrawReal runs the transport against every /dev/hidraw* node of
// the machine: identity and descriptor as sysfs has them, a read ended by
// its context and one ended by Close, through the runtime poller on the
// real character device. With DRVKIT_HIDRAW_E2E=1 (no one types, the
// nodes may be written) a read must time out, and a keyboard's LEDs are
// switched off with an output report.
func TestHidrawReal(t *testing.T) {
	nodes, _ := filepath.Glob("/dev/hidraw[0-9]*")
	if len(nodes) == 0 {
		t.Skip("SKIPPED: no /dev/hidraw* node on this machine; the real hidraw path runs in the QEMU end-to-end test (TestHIDKeyboard)")
	}
	e2e := os.Getenv(hidrawE2EEnv) == "1"
	for _, n := range nodes {
		t.Run(filepath.Base(n), func(t *testing.T) { hidrawReal(t, n, e2e) })
	}
}

func hidrawReal(t *testing.T, node string, e2e bool) {
	sys := filepath.Join("/sys/class/hidraw", filepath.Base(node), "device")
	uevent, err := os.ReadFile(filepath.Join(sys, "uevent"))
	require.NoError(t, err)
	var hidID string
	for _, l := range strings.Split(string(uevent), "\n") {
		if v, ok := strings.CutPrefix(l, "HID_ID="); ok {
			hidID = v
		}
	}
	sysDesc, err := os.ReadFile(filepath.Join(sys, "report_descriptor"))
	require.NoError(t, err)

	d, err := Hidraw{}.Open(node)
	require.NoError(t, err)
	info, err := d.Info()
	require.NoError(t, err)
	require.Equal(t, hidID, fmt.Sprintf("%04X:%08X:%08X", info.Bus, info.Vendor, info.Product), "HIDIOCGRAWINFO against sysfs")
	desc, err := d.ReportDescriptor()
	require.NoError(t, err)
	require.True(t, bytes.Equal(sysDesc, desc), "HIDIOCGRDESC against sysfs:\n%x\n%x", desc, sysDesc)
	rd, err := ParseReportDescriptor(desc)
	require.NoError(t, err)
	t.Logf("hidrawreal: %s: %s, descriptor %d bytes, usage %#x/%#x, input report %d bytes", node, hidID, len(desc), rd.UsagePage, rd.Usage, rd.MaxSize(Input))

	// A context ends a waiting read.
	buf := make([]byte, max(rd.MaxSize(Input), 64))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	n, err := d.ReadInput(ctx, buf)
	cancel()
	if e2e {
		require.ErrorIs(t, err, context.DeadlineExceeded, "no one types in the guest, yet read %x", buf[:n])
	} else if err == nil {
		t.Logf("hidrawreal: %s: someone typed: %x", node, buf[:n])
	} else {
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}

	if e2e && rd.UsagePage == UsagePageGenericDesktop && rd.Usage == UsageKeyboard && !rd.Numbered {
		// LEDs off: report ID 0, then the LED bits; the bare byte is refused.
		require.NoError(t, d.WriteOutput([]byte{0, 0}))
		require.ErrorIs(t, d.WriteOutput([]byte{0}), ErrReportSize)
		// A boot keyboard declares no feature report: whatever the device
		// answers (QEMU's answers any GET_REPORT, a real one may stall),
		// a live device's answer is not ErrNoDevice.
		p := make([]byte, 9)
		n, err := d.GetFeature(1, p)
		require.False(t, errors.Is(err, ErrNoDevice), "GET_REPORT of a present device: %v", err)
		t.Logf("hidrawreal: %s: GET_REPORT(feature 1): %x %v", node, p[:max(n, 0)], err)
	}

	// Close ends a waiting read with ErrClosed.
	done := make(chan error, 1)
	go func() { _, err := d.ReadInput(context.Background(), buf); done <- err }()
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, d.Close())
	select {
	case err := <-done:
		if !e2e && err == nil {
			return // a report came first
		}
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the read")
	}
}

// FromFile works on a duplicate: the caller's blocking file stays usable
// and open after the Device is closed, and a read on the Device parks in
// the poller (Close ends it).
func TestFromFile(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	d, err := FromFile(r, "/dev/hidraw9")
	require.NoError(t, err)
	_, err = w.Write([]byte{0, 1, 2})
	require.NoError(t, err)
	p := make([]byte, 8)
	n, err := d.ReadInput(context.Background(), p)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 1, 2}, p[:n])
	done := make(chan error, 1)
	go func() { _, err := d.ReadInput(context.Background(), p); done <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, d.Close())
	require.ErrorIs(t, <-done, ErrClosed)
	// The caller's file is still open.
	_, err = w.Write([]byte{7})
	require.NoError(t, err)
	n, err = r.Read(p)
	require.NoError(t, err)
	require.Equal(t, []byte{7}, p[:n])
}

package hidsim_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUnplugEndsInFlightRead(t *testing.T) {
	b := hidsim.New()
	dev := b.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 1, Product: 2}})
	h, err := b.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer h.Close()
	require.True(t, dev.Input([]byte{0, 0, 4, 0, 0, 0, 0, 0}))
	done := make(chan error, 1)
	buf := make([]byte, 8)
	go func() {
		_, err := h.ReadInput(context.Background(), buf) // the queued report
		if err == nil {
			_, err = h.ReadInput(context.Background(), buf) // waits
		}
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	dev.Unplug()
	select {
	case err := <-done:
		require.ErrorIs(t, err, hid.ErrNoDevice)
		require.ErrorIs(t, err, driver.ErrNoDevice)
	case <-time.After(10 * time.Second):
		t.Fatal("Unplug did not end the read")
	}
	for _, err := range []error{h.WriteOutput([]byte{1}), h.SetFeature([]byte{1})} {
		require.ErrorIs(t, err, hid.ErrNoDevice)
	}
	_, err = h.Info()
	require.ErrorIs(t, err, hid.ErrNoDevice)
	_, err = b.Open("/dev/hidraw0")
	require.ErrorIs(t, err, hid.ErrNoDevice)
	require.False(t, dev.Input([]byte{1}))
}

func TestReportsQueuedBeforeUnplugAreRead(t *testing.T) {
	b := hidsim.New()
	dev := b.Plug("/dev/hidraw0", hidsim.Spec{})
	dev.Input([]byte{1}) // before the first open: kept for it
	h, err := b.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer h.Close()
	dev.Input([]byte{2})
	dev.Unplug()
	buf := make([]byte, 8)
	for _, want := range []byte{1, 2} {
		n, err := h.ReadInput(context.Background(), buf)
		require.NoError(t, err)
		require.Equal(t, []byte{want}, buf[:n])
	}
	_, err = h.ReadInput(context.Background(), buf)
	require.ErrorIs(t, err, hid.ErrNoDevice)
}

func TestEachHandleGetsEveryReportBounded(t *testing.T) {
	b := hidsim.New()
	dev := b.Plug("/dev/hidraw0", hidsim.Spec{})
	h1, err := b.Open("/dev/hidraw0")
	require.NoError(t, err)
	h2, err := b.Open("/dev/hidraw0")
	require.NoError(t, err)
	for i := range 70 {
		dev.Input([]byte{byte(i)})
	}
	for _, h := range []hid.Device{h1, h2} {
		buf := make([]byte, 1)
		_, err := h.ReadInput(context.Background(), buf)
		require.NoError(t, err)
		require.Equal(t, byte(6), buf[0], "the 6 oldest of 70 were dropped (64 kept)")
	}
	require.Equal(t, 2, dev.OpenHandles())
	require.NoError(t, h1.Close())
	require.ErrorIs(t, h1.Close(), hid.ErrClosed)
	_, err = h1.ReadInput(context.Background(), make([]byte, 1))
	require.ErrorIs(t, err, hid.ErrClosed)
	require.NoError(t, h2.Close())
	require.Equal(t, 0, dev.OpenHandles())
}

func TestCancelAndClose(t *testing.T) {
	b := hidsim.New()
	b.Plug("/dev/hidraw0", hidsim.Spec{})
	h, err := b.Open("/dev/hidraw0")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = h.ReadInput(ctx, make([]byte, 8))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	done := make(chan error, 1)
	go func() { _, err := h.ReadInput(context.Background(), make([]byte, 8)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, h.Close())
	require.ErrorIs(t, <-done, hid.ErrClosed)
}

func TestOutputAndFeatureScripts(t *testing.T) {
	b := hidsim.New()
	desc := []byte{
		0x05, 0x01, 0x09, 0x00, 0xa1, 0x01,
		0x85, 0x01, 0x75, 0x08, 0x95, 0x02, 0x91, 0x02, // output report 1: 2 bytes
		0x85, 0x03, 0x95, 0x04, 0xb1, 0x02, // feature report 3: 4 bytes
		0xc0,
	}
	dev := b.Plug("/dev/hidraw1", hidsim.Spec{Descriptor: desc})
	boom := errors.New("stall")
	dev.OnSetFeature(func(r []byte) error {
		if r[1] == 0xff {
			return boom
		}
		return nil
	})
	dev.SetFeatureReport(3, []byte{3, 9, 8, 7, 6})
	h, err := b.Open("/dev/hidraw1")
	require.NoError(t, err)
	defer h.Close()

	require.NoError(t, h.WriteOutput([]byte{1, 0xaa, 0xbb}))
	require.ErrorIs(t, h.WriteOutput([]byte{1, 0xaa}), hid.ErrReportSize, "short")
	require.ErrorIs(t, h.WriteOutput([]byte{2, 0xaa, 0xbb}), hid.ErrReportSize, "no output report 2")
	require.ErrorIs(t, h.WriteOutput([]byte{1}), hid.ErrReportSize, "no data")
	require.Equal(t, [][]byte{{1, 0xaa, 0xbb}}, dev.Outputs())

	// Without numbered reports, the ID byte is 0 and still comes first.
	kbd := b.Plug("/dev/hidraw2", hidsim.Spec{Descriptor: hid.BootKeyboard})
	hk, err := b.Open("/dev/hidraw2")
	require.NoError(t, err)
	defer hk.Close()
	require.NoError(t, hk.WriteOutput([]byte{0, 0x02}))
	require.ErrorIs(t, hk.WriteOutput([]byte{0x02}), hid.ErrReportSize, "the LED byte without its report ID")
	require.ErrorContains(t, hk.WriteOutput([]byte{0x02, 0x00}), "report ID 2 on a device without numbered reports")
	require.Equal(t, [][]byte{{0, 0x02}}, kbd.Outputs())

	require.NoError(t, h.SetFeature([]byte{3, 1, 2, 3, 4}))
	require.ErrorIs(t, h.SetFeature([]byte{3, 0xff, 2, 3, 4}), boom)
	require.Len(t, dev.SetFeatures(), 2)
	p := make([]byte, 5)
	n, err := h.GetFeature(3, p)
	require.NoError(t, err)
	require.Equal(t, []byte{3, 9, 8, 7, 6}, p[:n])
	_, err = h.GetFeature(4, p)
	require.ErrorContains(t, err, "no feature report 4")

	got, err := h.ReportDescriptor()
	require.NoError(t, err)
	require.Equal(t, desc, got)
}

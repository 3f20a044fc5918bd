package usbsim_test

import (
	"context"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serial scripts a device with a bulk echo pair and an interrupt endpoint
// whose IN handler blocks until released or cancelled.
func plugSerial(b *usbsim.Backend, release chan struct{}, started chan struct{}) *usbsim.Device {
	var last []byte
	return b.Plug(usbsim.DeviceSpec{
		Bus: 1, Address: 4, Vendor: 0x0403, Product: 0x6001, Serial: "FT1",
		Interfaces: []usbsim.InterfaceSpec{{
			Number: 0, Class: 0xff, KernelDriver: "ftdi_sio",
			Endpoints: []usbsim.EndpointSpec{
				{Address: 0x02, Type: usb.TransferBulk, Handler: func(ctx context.Context, buf []byte) (int, error) {
					last = append(last[:0], buf...)
					return len(buf), nil
				}},
				{Address: 0x81, Type: usb.TransferBulk, Handler: func(ctx context.Context, buf []byte) (int, error) {
					if string(last) == "stall" {
						return 0, usb.ErrStall
					}
					return copy(buf, last), nil
				}},
				{Address: 0x83, Type: usb.TransferInterrupt, Handler: func(ctx context.Context, buf []byte) (int, error) {
					close(started)
					select {
					case <-release:
						buf[0] = 1
						return 1, nil
					case <-ctx.Done():
						return 0, ctx.Err()
					}
				}},
			},
		}},
	})
}

func TestFakeTransfersAndKernelDriver(t *testing.T) {
	ctx := context.Background()
	b := usbsim.New()
	defer b.Close()
	dev := plugSerial(b, make(chan struct{}), make(chan struct{}))
	infos, err := b.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, infos, 1)
	require.Equal(t, "001/004 0403:6001", infos[0].String())

	_, err = b.Open(ctx, usb.Selector{Vendor: 0x0403, Product: 0x6001, Serial: "other"})
	require.ErrorIs(t, err, usb.ErrNotFound)
	h, err := b.Open(ctx, usb.Selector{Vendor: 0x0403, Product: 0x6001, Serial: "FT1"})
	require.NoError(t, err)
	require.Equal(t, "FT1", h.Info().Serial)

	_, err = h.BulkTransfer(ctx, 0x02, []byte("x"))
	require.ErrorIs(t, err, usb.ErrNotClaimed)
	require.NoError(t, h.ClaimInterface(ctx, 0, 0))
	require.Equal(t, "usbfs", dev.KernelDriver(0))
	require.ErrorIs(t, h.ClaimInterface(ctx, 5, 0), usb.ErrNotFound)

	n, err := h.BulkTransfer(ctx, 0x02, []byte("hello"))
	require.NoError(t, err)
	require.Equal(t, 5, n)
	buf := make([]byte, 16)
	n, err = h.BulkTransfer(ctx, 0x81, buf)
	require.NoError(t, err)
	require.Equal(t, "hello", string(buf[:n]))
	_, err = h.InterruptTransfer(ctx, 0x81, buf)
	require.ErrorIs(t, err, usb.ErrNotSupported)

	// A stall halts the endpoint until the host clears it.
	_, err = h.BulkTransfer(ctx, 0x02, []byte("stall"))
	require.NoError(t, err)
	_, err = h.BulkTransfer(ctx, 0x81, buf)
	require.ErrorIs(t, err, usb.ErrStall)
	require.True(t, dev.Halted(0x81))
	_, err = h.BulkTransfer(ctx, 0x02, []byte("ok"))
	require.NoError(t, err)
	_, err = h.BulkTransfer(ctx, 0x81, buf)
	require.ErrorIs(t, err, usb.ErrStall, "still halted")
	require.NoError(t, h.ClearHalt(ctx, 0x81))
	n, err = h.BulkTransfer(ctx, 0x81, buf)
	require.NoError(t, err)
	require.Equal(t, "ok", string(buf[:n]))

	require.NoError(t, h.ReleaseInterface(0))
	require.ErrorIs(t, h.ReleaseInterface(0), usb.ErrNotClaimed)
	require.Equal(t, "ftdi_sio", dev.KernelDriver(0))
	require.Equal(t, []string{"detach ftdi_sio from interface 0", "clear halt 0x81", "attach ftdi_sio to interface 0"}, dev.Events())
	require.NoError(t, h.Close())
	require.NoError(t, h.Close())
	_, err = h.BulkTransfer(ctx, 0x02, nil)
	require.ErrorIs(t, err, usb.ErrClosed)
	require.Zero(t, b.OpenHandles())
}

func TestFakeUnplugInFlight(t *testing.T) {
	ctx := context.Background()
	b := usbsim.New()
	defer b.Close()
	started := make(chan struct{})
	dev := plugSerial(b, make(chan struct{}), started)
	h, err := b.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.ClaimInterface(ctx, 0, 0))

	errc := make(chan error, 1)
	go func() {
		_, err := h.InterruptTransfer(ctx, 0x83, make([]byte, 8))
		errc <- err
	}()
	<-started
	dev.Unplug()
	require.ErrorIs(t, <-errc, usb.ErrNoDevice)
	_, err = h.BulkTransfer(ctx, 0x02, []byte("x"))
	require.ErrorIs(t, err, usb.ErrNoDevice)
	require.ErrorIs(t, h.ClaimInterface(ctx, 0, 0), usb.ErrNoDevice)
	require.True(t, dev.Gone())
	infos, _ := b.Devices(ctx)
	require.Empty(t, infos)
}

func TestFakeCloseCancelsInFlight(t *testing.T) {
	ctx := context.Background()
	b := usbsim.New()
	started := make(chan struct{})
	plugSerial(b, make(chan struct{}), started)
	h, err := b.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.NoError(t, err)
	require.NoError(t, h.ClaimInterface(ctx, 0, 0))
	errc := make(chan error, 1)
	go func() {
		_, err := h.InterruptTransfer(ctx, 0x83, make([]byte, 8))
		errc <- err
	}()
	<-started
	require.NoError(t, b.Close()) // closes the handle: cancels, waits, releases
	require.ErrorIs(t, <-errc, usb.ErrClosed)
	_, err = b.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.ErrorIs(t, err, usb.ErrClosed)
}

func TestFakeTimeout(t *testing.T) {
	b := usbsim.New()
	defer b.Close()
	plugSerial(b, make(chan struct{}), make(chan struct{}))
	h, err := b.Open(context.Background(), usb.Selector{Bus: 1, Address: 4})
	require.NoError(t, err)
	require.NoError(t, h.ClaimInterface(context.Background(), 0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = h.InterruptTransfer(ctx, 0x83, make([]byte, 8))
	require.ErrorIs(t, err, usb.ErrTimeout)
	_, err = h.Control(context.Background(), 0x80, 6, 0x100, 0, nil)
	require.ErrorIs(t, err, usb.ErrStall, "no control handler: requests stall")
}

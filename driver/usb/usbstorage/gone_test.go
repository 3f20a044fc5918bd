package usbstorage_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// vanishing is a backend whose stick is unplugged at one step of the
// driver's Start: the window between the uevent that published the nub
// and the moment the driver has its device.
type vanishing struct {
	usb.Backend
	stick *usbtest.Device
	at    string // "open", "claim", "cbw" (the first bulk transfer), "csw" (the second)
	bulks atomic.Int32
}

func (v *vanishing) Open(ctx context.Context, sel usb.Selector) (usb.Device, error) {
	if v.at == "open" {
		v.stick.Unplug()
	}
	d, err := v.Backend.Open(ctx, sel)
	if err != nil {
		return nil, err
	}
	return &vanishingDevice{Device: d, v: v}, nil
}

type vanishingDevice struct {
	usb.Device
	v *vanishing
}

func (d *vanishingDevice) ClaimInterface(ctx context.Context, num, alt int) error {
	if d.v.at == "claim" {
		d.v.stick.Unplug()
	}
	return d.Device.ClaimInterface(ctx, num, alt)
}

func (d *vanishingDevice) BulkTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	n := d.v.bulks.Add(1)
	if d.v.at == "cbw" && n == 1 || d.v.at == "csw" && n == 2 {
		d.v.stick.Unplug()
	}
	return d.Device.BulkTransfer(ctx, ep, buf)
}

// startErr records what the driver's Start returned, as an error value
// (the lifecycle trace only keeps its text).
type startErr struct {
	driver.Driver
	errs chan<- error
}

func (s *startErr) Start(ctx context.Context, svc *driver.Service) error {
	err := s.Driver.Start(ctx, svc)
	s.errs <- err
	return err
}

// A stick unplugged at any step of Start — before the open (the device
// is no longer enumerated), before the interface claim, at the first
// bulk-only command's CBW or its CSW (TEST UNIT READY) — fails Start with an error that
// matches driver.ErrNoDevice (what every unplug reports) and the
// transport's own ErrNoDevice, never "not found"; nothing is left open and
// the lifecycle trace passes the checker.
func TestUSBStorageGoneDuringStart(t *testing.T) {
	for _, at := range []string{"open", "claim", "cbw", "csw"} {
		t.Run(at, func(t *testing.T) {
			leaktest.Check(t)
			r := driver.NewRegistry()
			rec := lifecycletest.Record(t, r)
			backend := usbtest.New()
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, r.Close(ctx))
				rec.Check(t)
				require.NoError(t, backend.Close())
				require.Zero(t, backend.OpenHandles(), "every usb handle closed")
			})
			_, stick := backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 23, Vendor: 0x46f4, Product: 1}, scsitest.NewDisk(64, 512))
			errs := make(chan error, 1)
			p := usbstorage.Personality(&vanishing{Backend: backend, stick: stick, at: at})
			inner := p.New
			p.New = func() driver.Driver { return &startErr{Driver: inner(), errs: errs} }
			require.NoError(t, r.RegisterPersonality(p))
			nub := r.NewNub(usbstorage.NubClass, "2-1:1.0", driver.NewProperties(map[string]any{
				usbstorage.PropBusNum: 2, usbstorage.PropDevNum: 23, usbstorage.PropInterfaceNumber: 0,
				usbstorage.PropInterfaceClass: 0x08, usbstorage.PropInterfaceSubClass: 0x06, usbstorage.PropInterfaceProtocol: 0x50,
			}))
			require.NoError(t, r.Publish(nil, nub))
			var err error
			select {
			case err = <-errs:
			case <-time.After(10 * time.Second):
				t.Fatal("Start did not return")
			}
			require.Error(t, err)
			require.ErrorIs(t, err, driver.ErrNoDevice)
			if at == "open" {
				require.ErrorIs(t, err, usb.ErrNoDevice)
				require.ErrorContains(t, err, "unplugged before it was opened")
			} else {
				require.True(t, errors.Is(err, usb.ErrNoDevice) || errors.Is(err, scsi.ErrNoDevice), "%v", err)
			}
			require.NoError(t, r.WaitQuiet(context.Background()))
			require.Empty(t, nub.Clients(), "the failed instance is gone")
			require.Zero(t, backend.OpenHandles())
		})
	}
}

// Command e2e-stick is the executable of the driver bundle the USB-hold
// scenario of the end-to-end tests loads in the QEMU guest: a driver of
// mass-storage interfaces that runs in a process of its own
// (driver/driverproc). Its Start opens the one USB device the daemon
// granted it (the usbfs node, after the daemon claimed the interface) and
// keeps it open until Stop; its "info" method says which device that is.
// It speaks no SCSI: the test is about who holds the interface, not about
// the disk.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb"
)

// Name is the driver's (and the bundle's) name.
const Name = "e2e-stick"

var entry = drivertable.Entry{
	Name:    Name,
	Summary: "holds a mass-storage interface's granted usbfs device open",
	Needs:   []string{devgrant.USBKey.Name()},
	Personalities: func(r *drivertable.Resources) ([]driver.Personality, error) {
		b, err := devgrant.USBKey.From(r)
		if err != nil {
			return nil, err
		}
		return []driver.Personality{{
			// The manifest's personality chose the interface.
			Name: Name, Class: "E2EStick", ProviderClass: devgrant.USBProviderClass,
			New: func() driver.Driver { return &stick{backend: b} },
		}}, nil
	},
}

type stick struct {
	backend usb.Backend
	info    atomic.Pointer[usb.DeviceInfo]
}

var (
	_ driver.Driver        = (*stick)(nil)
	_ driver.ClientMethods = (*stick)(nil)
)

func (d *stick) Start(ctx context.Context, s *driver.Service) error {
	devs, err := d.backend.Devices(ctx)
	if err != nil {
		return err
	}
	if len(devs) != 1 {
		return fmt.Errorf("granted %d USB devices, want 1", len(devs))
	}
	h, err := d.backend.Open(ctx, usb.Selector{Bus: devs[0].Bus, Address: devs[0].Address})
	if err != nil {
		return err
	}
	if err := s.Manage(h); err != nil {
		return errors.Join(err, h.Close())
	}
	info := h.Info()
	d.info.Store(&info)
	return nil
}

func (d *stick) Stop(*driver.Service) {}

func (d *stick) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"info": func(context.Context, *driver.Service, []byte) ([]byte, error) {
			return []byte(d.info.Load().String()), nil
		},
	}
}

func main() { driverproc.Main(entry) }

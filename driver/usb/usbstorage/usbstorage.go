package usbstorage

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdrv"
	"github.com/drvkit/drvkit/driver/usb"
)

// Names and the nub properties the personality reads. The hotplug bridge
// publishes USBInterface nubs with these keys (sysfs attribute names).
const (
	Name     = "usbstorage"
	Class    = "USBMassStorage"
	NubClass = "USBInterface"

	PropBusNum            = "busnum"
	PropDevNum            = "devnum"
	PropInterfaceNumber   = "bInterfaceNumber"
	PropInterfaceClass    = "bInterfaceClass"
	PropInterfaceSubClass = "bInterfaceSubClass"
	PropInterfaceProtocol = "bInterfaceProtocol"
)

// Personality returns the usbstorage personality opening devices through b.
func Personality(b usb.Backend) driver.Personality {
	return driver.Personality{
		Name: Name, Class: Class, ProviderClass: NubClass,
		Match: []driver.Match{
			driver.MatchValue(PropInterfaceClass, scsi.MassStorageClass),
			driver.MatchValue(PropInterfaceSubClass, scsi.MassStorageSubClass),
			driver.MatchValue(PropInterfaceProtocol, scsi.MassStorageProtocol),
		},
		New: func() driver.Driver {
			d := &Driver{backend: b}
			d.methods = blockdrv.Methods(func(*driver.Service) *scsi.Device { return d.dev.Load() })
			return d
		},
	}
}

// Driver is one usbstorage instance.
type Driver struct {
	backend usb.Backend
	dev     atomic.Pointer[scsi.Device]
	methods map[string]driver.Method
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.ClientMethods = (*Driver)(nil)
)

// upInt reads an integer property of the interface nub or, failing that, of
// the USB device nub it hangs under: the kernel reports the bus and device
// numbers on the device, not on its interfaces.
func upInt(nub *driver.Service, key string) (int64, bool) {
	if v, ok := nub.Properties().Int(key); ok {
		return v, true
	}
	for _, p := range nub.Providers() {
		if v, ok := p.Properties().Int(key); ok {
			return v, true
		}
	}
	return 0, false
}

// Start opens the device the nub describes and claims its interface.
func (d *Driver) Start(ctx context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	bus, ok1 := upInt(provs[0], PropBusNum)
	addr, ok2 := upInt(provs[0], PropDevNum)
	ifnum, ok3 := provs[0].Properties().Int(PropInterfaceNumber)
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("nub %s lacks %s/%s/%s", provs[0], PropBusNum, PropDevNum, PropInterfaceNumber)
	}
	h, err := d.backend.Open(ctx, usb.Selector{Bus: int(bus), Address: int(addr)})
	if err != nil {
		return mapErr(err)
	}
	// Managed resources are released in reverse: the SCSI device (which
	// releases the interface, re-attaching usb-storage) before the handle.
	if err := s.Manage(h); err != nil {
		return err
	}
	bot, err := scsi.NewBOT(ctx, h, scsi.WithInterface(int(ifnum)))
	if err != nil {
		return mapErr(err)
	}
	dev := scsi.NewDevice(bot)
	if err := s.Manage(dev); err != nil {
		return err
	}
	if err := spinUp(ctx, dev); err != nil {
		return mapErr(err)
	}
	d.dev.Store(dev)
	return nil
}

// spinUp clears the unit attention a freshly attached device reports and
// fails only on transport errors: a reader with no medium still starts.
func spinUp(ctx context.Context, dev *scsi.Device) error {
	var err error
	for range 3 {
		err = dev.TestUnitReady(ctx)
		if !errors.Is(err, scsi.ErrUnitAttention) {
			break
		}
	}
	var se *scsi.SenseError
	if err != nil && errors.As(err, &se) {
		return nil
	}
	return err
}

// Stop forgets the device; the managed handle and transport close after.
func (d *Driver) Stop(s *driver.Service) { d.dev.Store(nil) }

// Methods implements driver.ClientMethods.
func (d *Driver) Methods() map[string]driver.Method { return d.methods }

func mapErr(err error) error {
	if errors.Is(err, usb.ErrNoDevice) || errors.Is(err, scsi.ErrNoDevice) {
		return driver.NoDevice(err)
	}
	return err
}

package sg

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdrv"
)

// Names and the nub properties the personality reads. The hotplug bridge
// publishes SCSIDevice nubs with these keys.
const (
	Name     = "sg"
	Class    = "SCSIGenericBlock"
	NubClass = "SCSIDevice"

	PropType   = "type" // peripheral device type (int)
	PropSGNode = "sg"   // e.g. "/dev/sg1", as the hotplug bridge publishes it
)

// Opener opens a transport for an sg node path.
type Opener func(path string) (scsi.Transport, error)

// OpenSG is the real Opener (SG_IO on the node).
func OpenSG(path string) (scsi.Transport, error) { return scsi.OpenSG(path) }

// Personality returns the sg personality; open nil means OpenSG.
func Personality(open Opener) driver.Personality {
	if open == nil {
		open = OpenSG
	}
	return driver.Personality{
		Name: Name, Class: Class, ProviderClass: NubClass,
		Match: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool { return hasNode(p) && diskOrCD(p) })},
		New: func() driver.Driver {
			d := &Driver{open: open}
			d.methods = blockdrv.Methods(func(*driver.Service) *scsi.Device { return d.dev.Load() })
			return d
		},
	}
}

// hasNode: the nub has an sg node to open (absent without the kernel's sg).
func hasNode(p driver.Properties) bool {
	node, ok := p.String(PropSGNode)
	return ok && node != ""
}

func diskOrCD(p driver.Properties) bool {
	t, ok := p.Int(PropType)
	return ok && (t == int64(scsi.TypeDisk) || t == int64(scsi.TypeCDROM))
}

// Driver is one sg instance.
type Driver struct {
	open    Opener
	dev     atomic.Pointer[scsi.Device]
	methods map[string]driver.Method
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.ClientMethods = (*Driver)(nil)
)

// Start opens the nub's sg node.
func (d *Driver) Start(ctx context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	node, ok := provs[0].Properties().String(PropSGNode)
	if !ok {
		return fmt.Errorf("nub %s lacks %s", provs[0], PropSGNode)
	}
	t, err := d.open(node)
	if err != nil {
		return mapErr(err)
	}
	dev := scsi.NewDevice(t)
	if err := s.Manage(dev); err != nil {
		return err
	}
	// Clear a power-on unit attention; a drive with no medium still starts.
	for range 3 {
		err = dev.TestUnitReady(ctx)
		if !errors.Is(err, scsi.ErrUnitAttention) {
			break
		}
	}
	var se *scsi.SenseError
	if err != nil && !errors.As(err, &se) {
		return mapErr(err)
	}
	d.dev.Store(dev)
	return nil
}

// Stop forgets the device; the managed transport closes after.
func (d *Driver) Stop(s *driver.Service) { d.dev.Store(nil) }

// Methods implements driver.ClientMethods.
func (d *Driver) Methods() map[string]driver.Method { return d.methods }

func mapErr(err error) error {
	if errors.Is(err, scsi.ErrNoDevice) {
		return driver.NoDevice(err)
	}
	return err
}

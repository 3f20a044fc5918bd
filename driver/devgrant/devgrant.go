package devgrant

import (
	"context"
	"errors"
	"os"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

// File is one descriptor granted to a driver process and what it is.
type File struct {
	Resource string   // the drivertable resource it backs: "hid", "sg", "usb"
	Node     string   // the node the driver asks its resource for (/dev/hidraw0)
	Kind     string   // how to use the descriptor: "hidraw", "sg", "usbfs", "sim-hid", …
	File     *os.File // owned by the Grant until Close
}

// Grant is what the daemon hands a driver process for one nub. Close it
// once the driver process is gone: it closes the daemon's copies of the
// descriptors and releases what Open took (an interface claim, a pump
// serving a fake device).
type Grant struct {
	Files   []File
	release []func() error
}

// Close releases the grant; it is safe to call more than once.
func (g *Grant) Close() error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, f := range g.Files {
		if f.File != nil {
			errs = append(errs, f.File.Close())
		}
	}
	g.Files = nil
	for i := len(g.release) - 1; i >= 0; i-- {
		errs = append(errs, g.release[i]())
	}
	g.release = nil
	return errors.Join(errs...)
}

// Open opens, for a driver process matched to nub, the device behind it,
// using the daemon's resources res (real or simulated backends). A nub
// whose class grants nothing yields an empty Grant.
//
// TODO(devgrant): only the empty grant exists yet.
func Open(ctx context.Context, res *drivertable.Resources, nub *driver.Service) (*Grant, error) {
	return &Grant{}, nil
}

// Received is a descriptor as the driver process got it.
type Received = File

// Resources returns the driver-side resources backed by the received
// descriptors: the hid, sg and usb resources whose Open of the granted node
// uses the descriptor, and refuses any other node.
//
// TODO(devgrant): only empty resources exist yet.
func Resources(files []Received) *drivertable.Resources {
	return drivertable.NewResources()
}

package devgrant

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
)

var (
	// ErrNotGranted: a driver asked its resource for a device (a node, a
	// USB device, an interface, an endpoint) it was not granted.
	ErrNotGranted = errors.New("device not granted to this driver")
	// ErrNoNode: the nub lacks the property naming its device.
	ErrNoNode = errors.New("nub names no device node")
	// ErrNotDevice: the node is not the character device it should be.
	ErrNotDevice = errors.New("not a device node of its class")
	// ErrNotSupported: granting needs Linux (descriptor passing, usbfs,
	// SOCK_SEQPACKET).
	ErrNotSupported = errors.New("device grants need Linux")
)

// OpError is a failed grant: the operation, the nub it was for, its
// device node when known, and the cause. Its message is "op nub node:
// cause".
type OpError struct {
	Op   string // "grant"
	Nub  string // the nub, as driver.Service prints it
	Node string
	Err  error
}

func (e *OpError) Error() string {
	s := e.Op
	if e.Nub != "" {
		s += " " + e.Nub
	}
	if e.Node != "" {
		s += " " + e.Node
	}
	return s + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// File is one descriptor granted to a driver process and what it is.
type File struct {
	Resource string   // the drivertable resource it backs: "hidraw", "sg", "usb"
	Node     string   // the node the driver asks its resource for (/dev/hidraw0, /dev/bus/usb/001/004)
	Kind     string   // how to use the descriptor: "hidraw", "sg", "usbfs", "hid-socket", "sg-socket", "usb-socket"
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

// Close releases the grant; it is safe to call more than once. A File the
// caller closed already (the daemon's copy, dropped once sent) is skipped.
func (g *Grant) Close() error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, f := range g.Files {
		if f.File != nil {
			if err := f.File.Close(); !errors.Is(err, os.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	g.Files = nil
	for i := len(g.release) - 1; i >= 0; i-- {
		errs = append(errs, g.release[i]())
	}
	g.release = nil
	return errors.Join(errs...)
}

// Class grants the devices of one provider class of nubs, on both sides:
// the daemon's Grant opens a nub's device, the driver process's Provide
// turns what it received into its drivertable resource. Each device class
// registers one (hid.go, sg.go, usb.go); Register adds others.
type Class struct {
	// ProviderClass is the class of the nubs it grants ("HIDDevice").
	ProviderClass string
	// Resource is the drivertable resource the files back ("hidraw").
	Resource string
	// Grant opens nub's device with the daemon's resources. The files it
	// returns become the Grant's; release, if not nil, runs at Close,
	// after the files are closed.
	Grant func(ctx context.Context, res *drivertable.Resources, nub *driver.Service) (files []File, release func() error, err error)
	// Provide registers, on r, the resource backed by files (those of
	// this Resource, in the order received).
	Provide func(r *drivertable.Resources, files []Received)
}

var classes = struct {
	sync.RWMutex
	byNub      map[string]*Class
	byResource map[string]*Class
}{byNub: map[string]*Class{}, byResource: map[string]*Class{}}

// Register adds a class. A provider class or resource registered twice
// panics: two grants for one device is a program error.
func Register(c Class) {
	if c.ProviderClass == "" || c.Resource == "" || c.Grant == nil || c.Provide == nil {
		panic("devgrant: incomplete class " + c.ProviderClass)
	}
	classes.Lock()
	defer classes.Unlock()
	if classes.byNub[c.ProviderClass] != nil || classes.byResource[c.Resource] != nil {
		panic("devgrant: class registered twice: " + c.ProviderClass + "/" + c.Resource)
	}
	classes.byNub[c.ProviderClass] = &c
	classes.byResource[c.Resource] = &c
}

// Classes lists the registered provider classes, sorted.
func Classes() []string {
	classes.RLock()
	defer classes.RUnlock()
	out := make([]string, 0, len(classes.byNub))
	for n := range classes.byNub {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Open opens, for a driver process matched to nub, the device behind it,
// using the daemon's resources res (real or simulated backends). A nub
// whose class grants nothing yields an empty Grant.
func Open(ctx context.Context, res *drivertable.Resources, nub *driver.Service) (*Grant, error) {
	classes.RLock()
	c := classes.byNub[nub.Class()]
	classes.RUnlock()
	if c == nil {
		return &Grant{}, nil
	}
	files, release, err := c.Grant(ctx, res, nub)
	if err != nil {
		for _, f := range files {
			if f.File != nil {
				f.File.Close()
			}
		}
		var oe *OpError
		if errors.As(err, &oe) {
			return nil, err
		}
		return nil, &OpError{Op: "grant", Nub: nub.String(), Err: err}
	}
	g := &Grant{Files: files}
	if release != nil {
		g.release = append(g.release, release)
	}
	return g, nil
}

// Received is a descriptor as the driver process got it.
type Received = File

// Resources returns the driver-side resources backed by the received
// descriptors: the hid, sg and usb resources whose Open of the granted node
// uses the descriptor, and refuses any other node (ErrNotGranted). Files of
// a resource no class provides are ignored. The resources duplicate what
// they use; the caller keeps the files and closes them when the driver
// instance is done.
func Resources(files []Received) *drivertable.Resources {
	r := drivertable.NewResources()
	byRes := map[string][]Received{}
	var order []string
	for _, f := range files {
		if _, ok := byRes[f.Resource]; !ok {
			order = append(order, f.Resource)
		}
		byRes[f.Resource] = append(byRes[f.Resource], f)
	}
	classes.RLock()
	defer classes.RUnlock()
	for _, name := range order {
		if c := classes.byResource[name]; c != nil {
			c.Provide(r, byRes[name])
		}
	}
	return r
}

// grantError is the OpError of a class's grant; the node is named once,
// not again when the cause (an open's own error) names it already.
func grantError(nub *driver.Service, node string, err error) error {
	if strings.Contains(err.Error(), node) {
		node = ""
	}
	return &OpError{Op: "grant", Nub: nub.String(), Node: node, Err: err}
}

// find returns the received file for node, or ErrNotGranted.
func find(files []Received, node string) (Received, error) {
	for _, f := range files {
		if f.Node == node {
			return f, nil
		}
	}
	return Received{}, ErrNotGranted
}

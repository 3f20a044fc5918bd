//go:build linux && cgo

package usb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/gousb"
)

// Gousb is the Backend on libusb through gousb. A libusb context (and
// gousb's event goroutine, which wakes every 100 ms) exists only while a
// device is open or an enumeration runs.
//
// Every open device has a context of its own. libusb enumerates when a
// context starts and then learns of new devices only from udevd's events;
// with no udevd (an initramfs, a container, a minimal system) a context
// kept alive by one open device never sees a device plugged after it, and
// opening that one failed with ErrNotFound. A context per device starts
// from a fresh enumeration every time.
type Gousb struct {
	newContext func() *gousb.Context

	mu    sync.Mutex
	ctx   *gousb.Context
	users int
	devs  map[*gousbDevice]struct{}
	shut  bool
}

var _ Backend = (*Gousb)(nil)

// NewGousb returns the libusb backend. It does not touch libusb until used.
func NewGousb() *Gousb {
	return &Gousb{newContext: gousb.NewContext, devs: make(map[*gousbDevice]struct{})}
}

// safeNewContext calls gousb.NewContext, which panics when libusb_init
// fails (no usbfs, seccomp, ...): a daemon must get an error instead.
func safeNewContext(f func() *gousb.Context) (c *gousb.Context, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, &OpError{Op: "libusb init", Err: fmt.Errorf("%w: %v", ErrInit, r)}
		}
	}()
	return f(), nil
}

func (b *Gousb) acquire() (*gousb.Context, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shut {
		return nil, &OpError{Op: "open", Err: ErrClosed}
	}
	if b.ctx == nil {
		c, err := safeNewContext(b.newContext)
		if err != nil {
			return nil, err
		}
		b.ctx = c
	}
	b.users++
	return b.ctx, nil
}

func (b *Gousb) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.users--
	if b.users > 0 || b.ctx == nil {
		return nil
	}
	c := b.ctx
	b.ctx = nil
	if err := c.Close(); err != nil {
		return &OpError{Op: "libusb exit", Err: err}
	}
	return nil
}

// contextActive reports whether a libusb context exists (for tests).
func (b *Gousb) contextActive() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ctx != nil
}

// Devices implements Backend.
func (b *Gousb) Devices(ctx context.Context) ([]DeviceInfo, error) {
	c, err := b.acquire()
	if err != nil {
		return nil, err
	}
	defer b.release()
	var out []DeviceInfo
	_, err = c.OpenDevices(func(d *gousb.DeviceDesc) bool {
		out = append(out, infoFromDesc(d))
		return false
	})
	if err != nil {
		return out, &OpError{Op: "enumerate", Err: mapGousb(err)}
	}
	return out, ctx.Err()
}

func infoFromDesc(d *gousb.DeviceDesc) DeviceInfo {
	info := DeviceInfo{
		Bus: d.Bus, Address: d.Address, Port: append([]int(nil), d.Path...),
		Vendor: uint16(d.Vendor), Product: uint16(d.Product),
		Class: uint8(d.Class), SubClass: uint8(d.SubClass), Protocol: uint8(d.Protocol),
	}
	// Report the lowest-numbered configuration until the device is open and
	// the active one is known.
	cfg := -1
	for n := range d.Configs {
		if cfg < 0 || n < cfg {
			cfg = n
		}
	}
	if cfg >= 0 {
		info.Config = cfg
		info.Interfaces = interfacesOf(d.Configs[cfg])
	}
	return info
}

func interfacesOf(c gousb.ConfigDesc) []Interface {
	var out []Interface
	for _, i := range c.Interfaces {
		for _, a := range i.AltSettings {
			it := Interface{Number: a.Number, Alternate: a.Alternate, Class: uint8(a.Class), SubClass: uint8(a.SubClass), Protocol: uint8(a.Protocol)}
			for _, e := range a.Endpoints {
				it.Endpoints = append(it.Endpoints, Endpoint{Address: uint8(e.Address), Type: TransferType(e.TransferType), MaxPacketSize: e.MaxPacketSize})
			}
			out = append(out, it)
		}
	}
	return out
}

// newPrivate starts a context for one device (see Gousb).
func (b *Gousb) newPrivate() (*gousb.Context, error) {
	b.mu.Lock()
	shut := b.shut
	b.mu.Unlock()
	if shut {
		return nil, &OpError{Op: "open", Err: ErrClosed}
	}
	return safeNewContext(b.newContext)
}

// Open implements Backend.
func (b *Gousb) Open(ctx context.Context, sel Selector) (Device, error) {
	op := "open " + sel.String()
	c, err := b.newPrivate()
	if err != nil {
		return nil, err
	}
	devs, err := c.OpenDevices(func(d *gousb.DeviceDesc) bool {
		return sel.Matches(DeviceInfo{Bus: d.Bus, Address: d.Address, Vendor: uint16(d.Vendor), Product: uint16(d.Product)})
	})
	// OpenDevices may return devices and an error (one device failed);
	// keep what opened. With no devices and no error nothing matched: the
	// (nil, nil) that OpenDeviceWithVIDPID would give.
	var chosen *gousb.Device
	var serial string
	for _, d := range devs {
		if chosen != nil {
			d.Close()
			continue
		}
		s, serr := d.SerialNumber()
		if sel.Serial != "" && (serr != nil || s != sel.Serial) {
			d.Close()
			continue
		}
		chosen, serial = d, s
	}
	if chosen == nil {
		c.Close()
		if err != nil {
			return nil, &OpError{Op: op, Err: openFailed(sel, err, probeUsbfs)}
		}
		return nil, &OpError{Op: op, Err: NotFoundError(sel)}
	}
	if cerr := ctx.Err(); cerr != nil {
		chosen.Close()
		c.Close()
		return nil, &OpError{Op: op, Err: cerr}
	}
	info := infoFromDesc(chosen.Desc)
	info.Serial = serial
	if n, err := chosen.ActiveConfigNum(); err == nil {
		if cd, ok := chosen.Desc.Configs[n]; ok {
			info.Config = n
			info.Interfaces = interfacesOf(cd)
		}
	}
	dctx, cancel := context.WithCancel(context.Background())
	d := &gousbDevice{b: b, uctx: c, dev: chosen, info: info, ifaces: map[int]*gousb.Interface{},
		in: map[uint8]*gousb.InEndpoint{}, out: map[uint8]*gousb.OutEndpoint{}, epType: map[uint8]TransferType{},
		detached: map[int]string{}, ctx: dctx, cancel: cancel}
	// Without usbfs access drvkit cannot see kernel drivers; claiming then
	// fails with ErrBusy where one is bound, which is the honest outcome.
	if fs, err := openUsbfs(info.Bus, info.Address); err == nil {
		d.fs = fs
	}
	b.mu.Lock()
	b.devs[d] = struct{}{}
	b.mu.Unlock()
	return d, nil
}

// openFailed is the error of an Open whose device was listed but did not
// open. A device being removed fails the open with whatever libusb makes
// of the errno — usbfs answers ENODEV for a disconnected device, which
// libusb reports as LIBUSB_ERROR_IO — so for a selector naming the device
// by bus and address its usbfs node decides: gone, or answering ENODEV,
// means the device is gone (ErrNoDevice).
func openFailed(sel Selector, err error, probe func(bus, addr int) error) error {
	mapped := mapGousb(err)
	if errors.Is(mapped, ErrNoDevice) || sel.Bus == 0 || sel.Address == 0 {
		return mapped
	}
	if perr := probe(sel.Bus, sel.Address); errors.Is(perr, ErrNoDevice) {
		return fmt.Errorf("%w (%v; usbfs node: %v)", ErrNoDevice, err, perr)
	}
	return mapped
}

// probeUsbfs opens a device's usbfs node and closes it again.
func probeUsbfs(bus, addr int) error {
	fs, err := openUsbfs(bus, addr)
	if err != nil {
		return err
	}
	return fs.close()
}

// ReattachAll implements Backend.
func (b *Gousb) ReattachAll() error {
	b.mu.Lock()
	devs := make([]*gousbDevice, 0, len(b.devs))
	for d := range b.devs {
		devs = append(devs, d)
	}
	b.mu.Unlock()
	var errs []error
	for _, d := range devs {
		errs = append(errs, d.releaseAll())
	}
	return errors.Join(errs...)
}

// Close implements Backend.
func (b *Gousb) Close() error {
	b.mu.Lock()
	b.shut = true
	devs := make([]*gousbDevice, 0, len(b.devs))
	for d := range b.devs {
		devs = append(devs, d)
	}
	b.mu.Unlock()
	var errs []error
	for _, d := range devs {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

type gousbDevice struct {
	b    *Gousb
	uctx *gousb.Context // this device's own (see Gousb)
	info DeviceInfo
	fs   *usbfs

	ctx    context.Context // cancelled by Close: aborts in-flight transfers
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ctrlMu sync.Mutex // gousb's ControlTimeout is a field, not a parameter

	mu       sync.Mutex
	dev      *gousb.Device
	cfg      *gousb.Config
	ifaces   map[int]*gousb.Interface
	in       map[uint8]*gousb.InEndpoint
	out      map[uint8]*gousb.OutEndpoint
	epType   map[uint8]TransferType
	detached map[int]string
	closed   bool
}

var (
	_ Device             = (*gousbDevice)(nil)
	_ KernelDriverReader = (*gousbDevice)(nil)
)

func (d *gousbDevice) Info() DeviceInfo { return d.info }

func (d *gousbDevice) ClaimInterface(ctx context.Context, num, alt int) error {
	op := fmt.Sprintf("claim interface %d.%d of %s", num, alt, d.info)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return &OpError{Op: op, Err: ErrClosed}
	}
	if _, ok := d.ifaces[num]; ok {
		return &OpError{Op: op, Err: fmt.Errorf("%w: already claimed by this handle", ErrBusy)}
	}
	if d.cfg == nil {
		n, err := d.dev.ActiveConfigNum()
		if err != nil {
			return &OpError{Op: op, Err: mapGousb(err)}
		}
		cfg, err := d.dev.Config(n)
		if err != nil {
			return &OpError{Op: op, Err: mapGousb(err)}
		}
		d.cfg = cfg
	}
	detachedNow := false
	if d.fs != nil {
		drv, err := d.fs.driver(num)
		if err != nil {
			d.dropConfigLocked()
			return &OpError{Op: op, Err: err}
		}
		switch drv {
		case "":
		case "usbfs":
			// Another program holds it through usbfs; taking it away
			// would break that program.
			d.dropConfigLocked()
			return &OpError{Op: op, Err: fmt.Errorf("%w: claimed by another usbfs user", ErrBusy)}
		default:
			if err := d.fs.disconnect(num); err != nil {
				d.dropConfigLocked()
				return &OpError{Op: "detach kernel driver " + drv, Err: err}
			}
			d.detached[num] = drv
			detachedNow = true
		}
	}
	intf, err := d.cfg.Interface(num, alt)
	if err != nil {
		if detachedNow {
			d.reattachLocked(num)
		}
		d.dropConfigLocked()
		return &OpError{Op: op, Err: mapGousb(err)}
	}
	d.ifaces[num] = intf
	for addr, e := range intf.Setting.Endpoints {
		a := uint8(addr)
		if a&EndpointIn != 0 {
			ep, err := intf.InEndpoint(e.Number)
			if err != nil {
				continue
			}
			d.in[a] = ep
		} else {
			ep, err := intf.OutEndpoint(e.Number)
			if err != nil {
				continue
			}
			d.out[a] = ep
		}
		d.epType[a] = TransferType(e.TransferType)
	}
	return nil
}

// dropConfigLocked closes the config when no interface is claimed, so the
// device can be closed.
func (d *gousbDevice) dropConfigLocked() {
	if d.cfg != nil && len(d.ifaces) == 0 {
		d.cfg.Close()
		d.cfg = nil
	}
}

func (d *gousbDevice) reattachLocked(num int) error {
	drv, ok := d.detached[num]
	if !ok || d.fs == nil {
		return nil
	}
	delete(d.detached, num)
	if err := d.fs.connect(num); err != nil && !errors.Is(err, ErrNoDevice) {
		// A vanished device has nothing to re-attach to; anything else is
		// worth reporting.
		return &OpError{Op: fmt.Sprintf("re-attach %s to interface %d", drv, num), Err: err}
	}
	return nil
}

// KernelDriver implements KernelDriverReader: the driver usbfs reports
// bound to interface num ("usbfs" for a usbfs claim, "" for none).
func (d *gousbDevice) KernelDriver(num int) (string, error) {
	op := fmt.Sprintf("kernel driver of interface %d of %s", num, d.info)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return "", &OpError{Op: op, Err: ErrClosed}
	}
	if d.fs == nil {
		return "", &OpError{Op: op, Err: ErrNotSupported}
	}
	drv, err := d.fs.driver(num)
	if err != nil {
		return "", &OpError{Op: op, Err: err}
	}
	return drv, nil
}

func (d *gousbDevice) ReleaseInterface(num int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.releaseLocked(num)
}

func (d *gousbDevice) releaseLocked(num int) error {
	intf, ok := d.ifaces[num]
	if !ok {
		return &OpError{Op: fmt.Sprintf("release interface %d", num), Err: ErrNotClaimed}
	}
	for addr := range intf.Setting.Endpoints {
		delete(d.in, uint8(addr))
		delete(d.out, uint8(addr))
		delete(d.epType, uint8(addr))
	}
	intf.Close()
	delete(d.ifaces, num)
	err := d.reattachLocked(num)
	d.dropConfigLocked()
	return err
}

func (d *gousbDevice) releaseAll() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for n := range d.ifaces {
		errs = append(errs, d.releaseLocked(n))
	}
	for n := range d.detached {
		errs = append(errs, d.reattachLocked(n))
	}
	return errors.Join(errs...)
}

func (d *gousbDevice) Detached() []KernelDriver {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]KernelDriver, 0, len(d.detached))
	for n, drv := range d.detached {
		out = append(out, KernelDriver{Interface: n, Driver: drv})
	}
	return out
}

// begin registers an in-flight call; it fails once Close started.
func (d *gousbDevice) begin() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	return true
}

func (d *gousbDevice) BulkTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return d.transfer(ctx, TransferBulk, ep, buf)
}

func (d *gousbDevice) InterruptTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return d.transfer(ctx, TransferInterrupt, ep, buf)
}

func (d *gousbDevice) transfer(ctx context.Context, typ TransferType, ep uint8, buf []byte) (int, error) {
	op := fmt.Sprintf("%s transfer 0x%02x", typ, ep)
	if !d.begin() {
		return 0, &OpError{Op: op, Err: ErrClosed}
	}
	defer d.wg.Done()
	d.mu.Lock()
	t, ok := d.epType[ep]
	in, out := d.in[ep], d.out[ep]
	d.mu.Unlock()
	if !ok {
		return 0, &OpError{Op: op, Err: fmt.Errorf("%w: endpoint not in a claimed interface", ErrNotClaimed)}
	}
	if t != typ {
		return 0, &OpError{Op: op, Err: fmt.Errorf("%w: endpoint is %s", ErrNotSupported, t)}
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ctx, cancel)
	defer stop()
	var n int
	var err error
	if ep&EndpointIn != 0 {
		n, err = in.ReadContext(tctx, buf)
	} else {
		n, err = out.WriteContext(tctx, buf)
	}
	if err != nil {
		return n, &OpError{Op: op, Err: d.ctxErr(ctx, err)}
	}
	return n, nil
}

// ctxErr explains a cancelled transfer by whoever cancelled it.
func (d *gousbDevice) ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, gousb.TransferCancelled) {
		switch {
		case d.ctx.Err() != nil:
			return ErrClosed
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return fmt.Errorf("%w (%v)", ErrTimeout, ctx.Err())
		case ctx.Err() != nil:
			return ctx.Err()
		}
	}
	return mapGousb(err)
}

func (d *gousbDevice) Control(ctx context.Context, rType, req uint8, val, idx uint16, data []byte) (int, error) {
	op := fmt.Sprintf("control 0x%02x/0x%02x", rType, req)
	if !d.begin() {
		return 0, &OpError{Op: op, Err: ErrClosed}
	}
	defer d.wg.Done()
	if err := ctx.Err(); err != nil {
		return 0, &OpError{Op: op, Err: err}
	}
	// libusb's synchronous control transfer cannot be cancelled; the
	// context's deadline becomes its timeout.
	to := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		to = max(time.Until(dl), time.Millisecond)
	}
	d.ctrlMu.Lock()
	defer d.ctrlMu.Unlock()
	d.mu.Lock()
	dev := d.dev
	d.mu.Unlock()
	dev.ControlTimeout = to
	n, err := dev.Control(rType, req, val, idx, data)
	if err != nil {
		return n, &OpError{Op: op, Err: mapGousb(err)}
	}
	return n, nil
}

// ClearHalt sends CLEAR_FEATURE(ENDPOINT_HALT): gousb v1.1.3 does not wrap
// libusb_clear_halt.
func (d *gousbDevice) ClearHalt(ctx context.Context, ep uint8) error {
	_, err := d.Control(ctx, RequestTypeEndpointOut, RequestClearFeature, FeatureEndpointHalt, uint16(ep), nil)
	return err
}

func (d *gousbDevice) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	err := d.releaseAll()
	d.mu.Lock()
	errs := []error{err}
	if cerr := d.dev.Close(); cerr != nil {
		errs = append(errs, &OpError{Op: "close " + d.info.String(), Err: mapGousb(cerr)})
	}
	if d.fs != nil {
		d.fs.close()
	}
	d.mu.Unlock()
	d.b.mu.Lock()
	delete(d.b.devs, d)
	d.b.mu.Unlock()
	if cerr := d.uctx.Close(); cerr != nil {
		errs = append(errs, &OpError{Op: "libusb exit", Err: cerr})
	}
	return errors.Join(errs...)
}

// mapGousb maps gousb and libusb errors onto ours. gousb v1.1.3 formats
// some errors with %v, losing the type; the libusb message text is then
// the only clue, so it is matched as a fallback.
func mapGousb(err error) error {
	var ge gousb.Error
	if errors.As(err, &ge) {
		if s := sentinelForLibusb(ge); s != nil {
			return fmt.Errorf("%w (%v)", s, err)
		}
		return err
	}
	var ts gousb.TransferStatus
	if errors.As(err, &ts) {
		switch ts {
		case gousb.TransferNoDevice:
			return fmt.Errorf("%w (%v)", ErrNoDevice, err)
		case gousb.TransferTimedOut:
			return fmt.Errorf("%w (%v)", ErrTimeout, err)
		case gousb.TransferStall:
			return fmt.Errorf("%w (%v)", ErrStall, err)
		case gousb.TransferOverflow:
			return fmt.Errorf("%w (%v)", ErrOverflow, err)
		}
		return err
	}
	msg := err.Error()
	for _, e := range []gousb.Error{gousb.ErrorNoDevice, gousb.ErrorBusy, gousb.ErrorTimeout, gousb.ErrorNotFound, gousb.ErrorPipe, gousb.ErrorAccess, gousb.ErrorOverflow} {
		if strings.Contains(msg, e.Error()) {
			return fmt.Errorf("%w (%v)", sentinelForLibusb(e), err)
		}
	}
	return err
}

func sentinelForLibusb(e gousb.Error) error {
	switch e {
	case gousb.ErrorNoDevice:
		return ErrNoDevice
	case gousb.ErrorBusy:
		return ErrBusy
	case gousb.ErrorTimeout:
		return ErrTimeout
	case gousb.ErrorNotFound:
		return ErrNotFound
	case gousb.ErrorPipe:
		return ErrStall
	case gousb.ErrorAccess:
		return ErrAccess
	case gousb.ErrorOverflow:
		return ErrOverflow
	case gousb.ErrorNotSupported:
		return ErrNotSupported
	}
	return nil
}

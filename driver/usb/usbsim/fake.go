package usbsim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver/usb"
)

// Handler serves transfers on one endpoint: for IN endpoints it fills buf
// and returns the bytes produced, for OUT endpoints it consumes buf. ctx is
// cancelled when the caller gives up, the handle closes, or the device is
// unplugged. Returning an error matching usb.ErrStall halts the endpoint.
type Handler func(ctx context.Context, buf []byte) (int, error)

// Setup is the setup packet of a control transfer.
type Setup struct {
	RequestType, Request uint8
	Value, Index         uint16
}

// ControlHandler serves control transfers other than CLEAR_FEATURE
// (ENDPOINT_HALT), which the fake handles itself.
type ControlHandler func(ctx context.Context, s Setup, data []byte) (int, error)

// EndpointSpec scripts one endpoint.
type EndpointSpec struct {
	Address       uint8
	Type          usb.TransferType
	MaxPacketSize int
	Handler       Handler
}

// InterfaceSpec scripts one interface (alternate setting).
type InterfaceSpec struct {
	Number, Alternate         int
	Class, SubClass, Protocol uint8
	Endpoints                 []EndpointSpec
	// KernelDriver is the kernel driver bound at plug time ("" for none).
	KernelDriver string
}

// DeviceSpec scripts a device.
type DeviceSpec struct {
	Bus, Address              int
	Vendor, Product           uint16
	Class, SubClass, Protocol uint8
	Serial                    string
	Interfaces                []InterfaceSpec
	Control                   ControlHandler
}

// Backend is the fake usb.Backend.
type Backend struct {
	ks      *kernelState // nil unless PersistKernelState
	onBind  atomic.Pointer[func(spec DeviceSpec, iface int, from, to string)]
	mu      sync.Mutex
	devs    []*Device
	handles map[*handle]struct{}
	closed  bool
}

var _ usb.Backend = (*Backend)(nil)

// New returns an empty fake backend.
func New() *Backend { return &Backend{handles: make(map[*handle]struct{})} }

// Device is a plugged fake device, the test's side of it.
type Device struct {
	spec   DeviceSpec
	eps    map[uint8]EndpointSpec
	goneCx context.Context
	unplug context.CancelFunc

	mu      sync.Mutex
	bound   map[int]string // interface → bound driver; "usbfs" while claimed
	owner   map[int]*handle
	halted  map[uint8]bool
	events  []string
	clears  map[uint8]int
	backend *Backend
}

// Plug adds a device; it can be opened at once.
func (b *Backend) Plug(spec DeviceSpec) *Device {
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{spec: spec, eps: map[uint8]EndpointSpec{}, goneCx: ctx, unplug: cancel,
		bound: map[int]string{}, owner: map[int]*handle{}, halted: map[uint8]bool{}, clears: map[uint8]int{}, backend: b}
	for _, i := range spec.Interfaces {
		if i.KernelDriver != "" {
			d.bound[i.Number] = i.KernelDriver
		}
		for _, e := range i.Endpoints {
			d.eps[e.Address] = e
		}
	}
	if b.ks != nil {
		// The kernel kept this device's bindings while no daemon ran.
		if saved, ok := b.ks.restore(spec); ok {
			d.bound = saved
		}
		d.mu.Lock()
		d.persistLocked()
		d.mu.Unlock()
	}
	b.mu.Lock()
	b.devs = append(b.devs, d)
	b.mu.Unlock()
	return d
}

// Unplug removes the device: in-flight transfers return usb.ErrNoDevice,
// and so does every later call on its handles.
func (d *Device) Unplug() {
	d.unplug()
	if ks := d.backend.ks; ks != nil {
		ks.forget(d.spec)
	}
	b := d.backend
	b.mu.Lock()
	b.devs = slices.DeleteFunc(b.devs, func(x *Device) bool { return x == d })
	b.mu.Unlock()
}

// Gone reports whether the device was unplugged.
func (d *Device) Gone() bool { return d.goneCx.Err() != nil }

// KernelDriver returns the driver bound to interface num now: the kernel
// driver's name, "usbfs" while a handle claims it, or "".
func (d *Device) KernelDriver(num int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.bound[num]
}

// Events returns the kernel-driver and halt history, e.g.
// "detach usb-storage from interface 0", "attach usb-storage to interface 0",
// "clear halt 0x81".
func (d *Device) Events() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.events)
}

// Stall halts endpoint ep, as a device does on a protocol error.
func (d *Device) Stall(ep uint8) {
	d.mu.Lock()
	d.halted[ep] = true
	d.mu.Unlock()
}

// Halted reports whether ep is halted.
func (d *Device) Halted(ep uint8) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.halted[ep]
}

// ClearHalts returns how many times the host cleared a halt on ep.
func (d *Device) ClearHalts(ep uint8) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.clears[ep]
}

func (d *Device) info() usb.DeviceInfo {
	s := d.spec
	info := usb.DeviceInfo{Bus: s.Bus, Address: s.Address, Vendor: s.Vendor, Product: s.Product,
		Class: s.Class, SubClass: s.SubClass, Protocol: s.Protocol, Config: 1}
	for _, i := range s.Interfaces {
		it := usb.Interface{Number: i.Number, Alternate: i.Alternate, Class: i.Class, SubClass: i.SubClass, Protocol: i.Protocol}
		for _, e := range i.Endpoints {
			it.Endpoints = append(it.Endpoints, usb.Endpoint{Address: e.Address, Type: e.Type, MaxPacketSize: e.MaxPacketSize})
		}
		info.Interfaces = append(info.Interfaces, it)
	}
	return info
}

// OpenHandles returns the number of open device handles (for leak checks).
func (b *Backend) OpenHandles() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.handles)
}

// Devices implements usb.Backend.
func (b *Backend) Devices(ctx context.Context) ([]usb.DeviceInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]usb.DeviceInfo, 0, len(b.devs))
	for _, d := range b.devs {
		out = append(out, d.info())
	}
	return out, nil
}

// Open implements usb.Backend.
func (b *Backend) Open(ctx context.Context, sel usb.Selector) (usb.Device, error) {
	op := "open " + sel.String()
	if err := ctx.Err(); err != nil {
		return nil, &usb.OpError{Op: op, Err: err}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, &usb.OpError{Op: op, Err: usb.ErrClosed}
	}
	for _, d := range b.devs {
		info := d.info()
		if !sel.Matches(info) || (sel.Serial != "" && sel.Serial != d.spec.Serial) {
			continue
		}
		info.Serial = d.spec.Serial
		hctx, cancel := context.WithCancel(d.goneCx)
		h := &handle{dev: d, info: info, claimed: map[int]bool{}, detached: map[int]string{}, ctx: hctx, cancel: cancel}
		b.handles[h] = struct{}{}
		return h, nil
	}
	return nil, &usb.OpError{Op: op, Err: usb.NotFoundError(sel)}
}

// ReattachAll implements usb.Backend.
func (b *Backend) ReattachAll() error {
	b.mu.Lock()
	hs := make([]*handle, 0, len(b.handles))
	for h := range b.handles {
		hs = append(hs, h)
	}
	b.mu.Unlock()
	for _, h := range hs {
		h.releaseAll()
	}
	return nil
}

// Close implements usb.Backend.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	hs := make([]*handle, 0, len(b.handles))
	for h := range b.handles {
		hs = append(hs, h)
	}
	b.mu.Unlock()
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.Close())
	}
	return errors.Join(errs...)
}

type handle struct {
	dev    *Device
	info   usb.DeviceInfo
	ctx    context.Context // cancelled on Close or unplug
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	claimed  map[int]bool
	detached map[int]string
}

var (
	_ usb.Device             = (*handle)(nil)
	_ usb.KernelDriverReader = (*handle)(nil)
)

func (h *handle) Info() usb.DeviceInfo { return h.info }

// check returns the error for a call on a closed handle or gone device.
func (h *handle) check(op string) error {
	if h.dev.Gone() {
		return &usb.OpError{Op: op, Err: usb.ErrNoDevice}
	}
	if h.closed {
		return &usb.OpError{Op: op, Err: usb.ErrClosed}
	}
	return nil
}

func (h *handle) ClaimInterface(ctx context.Context, num, alt int) error {
	op := fmt.Sprintf("claim interface %d.%d", num, alt)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(op); err != nil {
		return err
	}
	found := false
	for _, i := range h.dev.spec.Interfaces {
		found = found || (i.Number == num && i.Alternate == alt)
	}
	if !found {
		return &usb.OpError{Op: op, Err: usb.ErrNotFound}
	}
	d := h.dev
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owner[num] != nil {
		return &usb.OpError{Op: op, Err: fmt.Errorf("%w: claimed by another usbfs user", usb.ErrBusy)}
	}
	from := d.bound[num]
	if from != "" {
		d.events = append(d.events, fmt.Sprintf("detach %s from interface %d", from, num))
		h.detached[num] = from
	}
	d.bound[num] = "usbfs"
	d.owner[num] = h
	h.claimed[num] = true
	d.persistLocked()
	d.boundChangedLocked(num, from, "usbfs")
	return nil
}

// KernelDriver implements usb.KernelDriverReader: the driver the
// simulated kernel has bound to interface num ("usbfs" while claimed).
func (h *handle) KernelDriver(num int) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(fmt.Sprintf("kernel driver of interface %d", num)); err != nil {
		return "", err
	}
	h.dev.mu.Lock()
	defer h.dev.mu.Unlock()
	return h.dev.bound[num], nil
}

func (h *handle) ReleaseInterface(num int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.claimed[num] {
		return &usb.OpError{Op: fmt.Sprintf("release interface %d", num), Err: usb.ErrNotClaimed}
	}
	h.releaseLocked(num)
	return nil
}

func (h *handle) releaseLocked(num int) {
	d := h.dev
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(h.claimed, num)
	delete(d.owner, num)
	from := d.bound[num]
	delete(d.bound, num)
	if drv, ok := h.detached[num]; ok {
		delete(h.detached, num)
		if d.goneCx.Err() == nil {
			d.bound[num] = drv
			d.events = append(d.events, fmt.Sprintf("attach %s to interface %d", drv, num))
		}
	}
	d.persistLocked()
	if d.goneCx.Err() == nil {
		d.boundChangedLocked(num, from, d.bound[num])
	}
}

func (h *handle) releaseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n := range h.claimed {
		h.releaseLocked(n)
	}
}

func (h *handle) Detached() []usb.KernelDriver {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]usb.KernelDriver, 0, len(h.detached))
	for n, drv := range h.detached {
		out = append(out, usb.KernelDriver{Interface: n, Driver: drv})
	}
	slices.SortFunc(out, func(a, b usb.KernelDriver) int { return a.Interface - b.Interface })
	return out
}

func (h *handle) BulkTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return h.transfer(ctx, usb.TransferBulk, ep, buf)
}

func (h *handle) InterruptTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return h.transfer(ctx, usb.TransferInterrupt, ep, buf)
}

// begin registers an in-flight call.
func (h *handle) begin(op string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(op); err != nil {
		return err
	}
	h.wg.Add(1)
	return nil
}

func (h *handle) transfer(ctx context.Context, typ usb.TransferType, ep uint8, buf []byte) (int, error) {
	if err := h.begin(""); err != nil {
		err.(*usb.OpError).Op = xop(typ, ep)
		return 0, err
	}
	defer h.wg.Done()
	d := h.dev
	spec, ok := d.eps[ep]
	iface := -1
	for _, i := range d.spec.Interfaces {
		for _, e := range i.Endpoints {
			if e.Address == ep {
				iface = i.Number
			}
		}
	}
	h.mu.Lock()
	claimed := iface >= 0 && h.claimed[iface]
	h.mu.Unlock()
	switch {
	case !ok || !claimed:
		return 0, &usb.OpError{Op: xop(typ, ep), Err: fmt.Errorf("%w: endpoint not in a claimed interface", usb.ErrNotClaimed)}
	case spec.Type != typ:
		return 0, &usb.OpError{Op: xop(typ, ep), Err: fmt.Errorf("%w: endpoint is %s", usb.ErrNotSupported, spec.Type)}
	case d.Halted(ep):
		return 0, &usb.OpError{Op: xop(typ, ep), Err: usb.ErrStall}
	case spec.Handler == nil:
		return 0, &usb.OpError{Op: xop(typ, ep), Err: usb.ErrStall}
	}
	if err := ctx.Err(); err != nil {
		return 0, &usb.OpError{Op: xop(typ, ep), Err: ctxErr(err)}
	}
	tctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ctx, cancel)
	n, err := spec.Handler(tctx, buf)
	stop()
	cancel()
	switch {
	case d.Gone():
		return n, &usb.OpError{Op: xop(typ, ep), Err: usb.ErrNoDevice}
	case h.ctx.Err() != nil:
		return n, &usb.OpError{Op: xop(typ, ep), Err: usb.ErrClosed}
	case err == nil:
		return n, nil
	case errors.Is(err, usb.ErrStall):
		d.Stall(ep)
	case ctx.Err() != nil:
		err = ctxErr(ctx.Err())
	}
	return n, &usb.OpError{Op: xop(typ, ep), Err: err}
}

// xop names a transfer for errors; built only when one is returned.
func xop(typ usb.TransferType, ep uint8) string {
	return fmt.Sprintf("%s transfer 0x%02x", typ, ep)
}

func ctxErr(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%v)", usb.ErrTimeout, err)
	}
	return err
}

func (h *handle) Control(ctx context.Context, rType, req uint8, val, idx uint16, data []byte) (int, error) {
	op := fmt.Sprintf("control 0x%02x/0x%02x", rType, req)
	if err := h.begin(op); err != nil {
		return 0, err
	}
	defer h.wg.Done()
	if err := ctx.Err(); err != nil {
		return 0, &usb.OpError{Op: op, Err: ctxErr(err)}
	}
	d := h.dev
	if rType == usb.RequestTypeEndpointOut && req == usb.RequestClearFeature && val == usb.FeatureEndpointHalt {
		ep := uint8(idx)
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, ok := d.eps[ep]; !ok {
			return 0, &usb.OpError{Op: op, Err: usb.ErrStall}
		}
		d.halted[ep] = false
		d.clears[ep]++
		d.events = append(d.events, fmt.Sprintf("clear halt 0x%02x", ep))
		return 0, nil
	}
	if d.spec.Control == nil {
		return 0, &usb.OpError{Op: op, Err: usb.ErrStall}
	}
	tctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ctx, cancel)
	n, err := d.spec.Control(tctx, Setup{RequestType: rType, Request: req, Value: val, Index: idx}, data)
	stop()
	cancel()
	switch {
	case d.Gone():
		return n, &usb.OpError{Op: op, Err: usb.ErrNoDevice}
	case err != nil:
		return n, &usb.OpError{Op: op, Err: err}
	}
	return n, nil
}

func (h *handle) ClearHalt(ctx context.Context, ep uint8) error {
	_, err := h.Control(ctx, usb.RequestTypeEndpointOut, usb.RequestClearFeature, usb.FeatureEndpointHalt, uint16(ep), nil)
	return err
}

func (h *handle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	h.releaseAll()
	b := h.dev.backend
	b.mu.Lock()
	delete(b.handles, h)
	b.mu.Unlock()
	return nil
}

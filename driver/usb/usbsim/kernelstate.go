package usbsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/internal/statefile"
)

// The fake's kernel: which driver each interface of each device is bound
// to. On a real machine that state belongs to the kernel and outlives any
// daemon; here the fake lives in the daemon's process, so
// PersistKernelState keeps it in a file that the next daemon's fake reads.
// What the file does not keep is a claim (the "usbfs" binding): the kernel
// drops the claims of a process that dies and leaves the interface without
// a driver, which is exactly what a restarted daemon must repair.

type kernelState struct {
	path string
	mu   sync.Mutex
	devs map[string]map[int]string // device key → interface → driver
}

func deviceKey(s DeviceSpec) string {
	return fmt.Sprintf("%03d/%03d %04x:%04x", s.Bus, s.Address, s.Vendor, s.Product)
}

// PersistKernelState keeps the interface bindings of the backend's devices
// in the file at path (created if missing) and, for devices plugged from
// now on, starts from the bindings the file holds for them: a daemon
// restarted on a simulated bus finds the kernel as its predecessor left it.
// Call it before plugging devices.
func (b *Backend) PersistKernelState(path string) error {
	ks := &kernelState{path: path, devs: map[string]map[int]string{}}
	data, err := statefile.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("kernel state: %w", err)
	default:
		if err := json.Unmarshal(data, &ks.devs); err != nil {
			return fmt.Errorf("kernel state %s: %w", path, err)
		}
	}
	b.mu.Lock()
	b.ks = ks
	b.mu.Unlock()
	return nil
}

// restore returns the saved bindings of spec's device, its claims dropped.
func (ks *kernelState) restore(spec DeviceSpec) (map[int]string, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	saved, ok := ks.devs[deviceKey(spec)]
	if !ok {
		return nil, false
	}
	out := map[int]string{}
	for i, drv := range saved {
		if drv != "usbfs" {
			out[i] = drv
		}
	}
	return out, true
}

func (ks *kernelState) record(spec DeviceSpec, bound map[int]string) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.devs[deviceKey(spec)] = maps.Clone(bound)
	ks.saveLocked()
}

func (ks *kernelState) forget(spec DeviceSpec) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	delete(ks.devs, deviceKey(spec))
	ks.saveLocked()
}

func (ks *kernelState) saveLocked() {
	data, _ := json.MarshalIndent(ks.devs, "", "  ")
	_ = statefile.WriteFile(ks.path, data)
}

// persistLocked records d's bindings; d.mu is held.
func (d *Device) persistLocked() {
	if ks := d.backend.ks; ks != nil && d.goneCx.Err() == nil {
		ks.record(d.spec, d.bound)
	}
}

// BindKernelDriver binds driver to interface iface of the device sel picks
// when nobody holds it (usb.KernelBinder): what `echo 2-1:1.0 >
// /sys/bus/usb/drivers/usb-storage/bind` does on a real machine.
func (b *Backend) BindKernelDriver(ctx context.Context, sel usb.Selector, iface int, driver string) error {
	op := fmt.Sprintf("bind %s to %s interface %d", driver, sel, iface)
	b.mu.Lock()
	var d *Device
	for _, x := range b.devs {
		if sel.Matches(x.info()) {
			d = x
			break
		}
	}
	b.mu.Unlock()
	if d == nil {
		return &usb.OpError{Op: op, Err: usb.ErrNotFound}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch cur := d.bound[iface]; {
	case cur == driver:
		return &usb.OpError{Op: op, Err: usb.ErrBound}
	case cur != "":
		return &usb.OpError{Op: op, Err: fmt.Errorf("%w: bound to %s", usb.ErrBusy, cur)}
	}
	d.bound[iface] = driver
	d.events = append(d.events, fmt.Sprintf("attach %s to interface %d", driver, iface))
	d.persistLocked()
	d.boundChangedLocked(iface, "", driver)
	return nil
}

// OnKernelDriver calls f whenever an interface of a plugged device changes
// driver — a claim detaching the kernel driver for usbfs, a release
// re-attaching it, BindKernelDriver — with the drivers before and after
// ("" for none). A simulated bus uses it to emit the uevents the kernel
// would. f runs with the device locked: it must not call into the fake.
func (b *Backend) OnKernelDriver(f func(spec DeviceSpec, iface int, from, to string)) {
	b.onBind.Store(&f)
}

// boundChangedLocked reports a binding change to the observer; d.mu is held
// (the observer is an atomic pointer so that no other lock is taken here).
func (d *Device) boundChangedLocked(iface int, from, to string) {
	if f := d.backend.onBind.Load(); f != nil && *f != nil && from != to {
		(*f)(d.spec, iface, from, to)
	}
}

var _ usb.KernelBinder = (*Backend)(nil)

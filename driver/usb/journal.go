package usb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/internal/statefile"
)

// KernelBinder is implemented by backends that can bind a kernel driver to
// an interface nobody holds: how a restarted daemon gives back what its
// killed predecessor detached. Gousb does it through sysfs (the driver's
// bind file), usbsim's fake in its simulated kernel. A driver bound
// already gives an error matching ErrBound.
type KernelBinder interface {
	BindKernelDriver(ctx context.Context, sel Selector, iface int, driver string) error
}

// KernelDriverReader is implemented by devices that can tell which kernel
// driver is bound to an interface ("" for none) without changing anything.
// The journal uses it to write an entry down before a claim detaches the
// driver: a daemon killed between the detach and the write would otherwise
// leave the interface driverless with nothing on record. Gousb asks usbfs,
// usbsim's fake its simulated kernel.
type KernelDriverReader interface {
	KernelDriver(iface int) (string, error)
}

// JournalEntry is a kernel driver drvkit detached and has not given back.
type JournalEntry struct {
	Bus       int    `json:"bus"`
	Address   int    `json:"address"`
	Vendor    uint16 `json:"vendor"`
	Product   uint16 `json:"product"`
	Interface int    `json:"interface"`
	Driver    string `json:"driver"`
}

func (e JournalEntry) selector() Selector { return Selector{Bus: e.Bus, Address: e.Address} }

func (e JournalEntry) device(info DeviceInfo) bool {
	return e.Bus == info.Bus && e.Address == info.Address && e.Vendor == info.Vendor && e.Product == info.Product
}

// Journal is drvkit's bookkeeping of detached kernel drivers, kept in a
// file so that it survives the daemon. A daemon killed while it holds an
// interface leaves that interface without its kernel driver: the kernel
// drops the dead process's claim but does not rebind. The next daemon reads
// the journal and re-attaches (Recover, RecoverDevice).
//
// Wrap a Backend with it: every kernel driver a claim detaches is written
// down (the file is replaced atomically) and crossed out once released,
// re-attached or gone with its device.
type Journal struct {
	path string

	mu      sync.Mutex
	entries []JournalEntry
}

// ErrJournal wraps failures to read or write the journal file.
var ErrJournal = errors.New("detach journal")

// OpenJournal loads the journal at path; a missing file is an empty one.
func OpenJournal(path string) (*Journal, error) {
	j := &Journal{path: path}
	b, err := statefile.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return j, nil
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrJournal, err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &j.entries); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrJournal, path, err)
		}
	}
	for i, e := range j.entries {
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("%w: %s: entry %d: %w", ErrJournal, path, i, err)
		}
	}
	return j, nil
}

// check refuses entries no claim writes: the journal is read back by a
// daemon running as root, which writes Driver into a sysfs path.
func (e JournalEntry) check() error {
	switch {
	case e.Bus < 1 || e.Bus > 255 || e.Address < 1 || e.Address > 255:
		return fmt.Errorf("bus %d address %d: want 1-255", e.Bus, e.Address)
	case e.Interface < 0 || e.Interface > 255:
		return fmt.Errorf("interface %d: want 0-255", e.Interface)
	case e.Driver == "" || e.Driver == "." || e.Driver == ".." || len(e.Driver) > 255 ||
		strings.ContainsAny(e.Driver, "/\x00"):
		return fmt.Errorf("driver %q: not a kernel driver name", e.Driver)
	}
	return nil
}

// Entries returns the kernel drivers detached and not given back.
func (j *Journal) Entries() []JournalEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.entries)
}

func (j *Journal) saveLocked() error {
	b, err := json.MarshalIndent(j.entries, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(j.path), 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	// Never through a symlink, fsynced around the rename.
	if err := statefile.WriteFile(j.path, b); err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	return nil
}

// add writes e down; added is false if it was there already.
func (j *Journal) add(e JournalEntry) (added bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if slices.Contains(j.entries, e) {
		return false, nil
	}
	j.entries = append(j.entries, e)
	if err := j.saveLocked(); err != nil {
		j.entries = j.entries[:len(j.entries)-1]
		return false, err
	}
	return true, nil
}

// drop crosses out exactly e.
func (j *Journal) drop(e JournalEntry) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	i := slices.Index(j.entries, e)
	if i < 0 {
		return nil
	}
	j.entries = slices.Delete(j.entries, i, i+1)
	return j.saveLocked()
}

// remove crosses out the entries of info's device (interface iface, or all
// with iface < 0).
func (j *Journal) remove(info DeviceInfo, iface int) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := len(j.entries)
	j.entries = slices.DeleteFunc(j.entries, func(e JournalEntry) bool {
		return e.device(info) && (iface < 0 || e.Interface == iface)
	})
	if len(j.entries) == n {
		return nil
	}
	return j.saveLocked()
}

// Recover re-attaches every journaled kernel driver whose device b lists
// now, through b's KernelBinder, and crosses out the entries of devices
// that are gone (the kernel binds a replugged device afresh) and of
// drivers found still bound. It returns what it re-attached. For a daemon
// starting on real hardware, where every present device is listed.
func (j *Journal) Recover(ctx context.Context, b Backend) ([]JournalEntry, error) {
	devs, err := b.Devices(ctx)
	if err != nil {
		return nil, err
	}
	var done []JournalEntry
	var errs []error
	for _, e := range j.Entries() {
		i := slices.IndexFunc(devs, e.device)
		if i < 0 {
			errs = append(errs, j.remove(DeviceInfo{Bus: e.Bus, Address: e.Address, Vendor: e.Vendor, Product: e.Product}, e.Interface))
			continue
		}
		ok, err := j.recoverOne(ctx, b, devs[i], e)
		if ok {
			done = append(done, e)
		}
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

// RecoverDevice is Recover for one device that just arrived (a simulated
// bus enumerates devices as its scenario plugs them).
func (j *Journal) RecoverDevice(ctx context.Context, b Backend, info DeviceInfo) ([]JournalEntry, error) {
	var done []JournalEntry
	var errs []error
	for _, e := range j.Entries() {
		if !e.device(info) {
			continue
		}
		ok, err := j.recoverOne(ctx, b, info, e)
		if ok {
			done = append(done, e)
		}
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

func (j *Journal) recoverOne(ctx context.Context, b Backend, info DeviceInfo, e JournalEntry) (bool, error) {
	kb, ok := b.(KernelBinder)
	if !ok {
		return false, &OpError{Op: "re-attach " + e.Driver, Err: ErrNotSupported}
	}
	err := kb.BindKernelDriver(ctx, e.selector(), e.Interface, e.Driver)
	switch {
	case errors.Is(err, ErrBound):
		// Written ahead of a detach that never happened (the daemon died
		// in between): nothing is owed, and nothing was re-attached.
		return false, j.remove(info, e.Interface)
	case err != nil:
		return false, err
	}
	return true, j.remove(info, e.Interface)
}

// Record writes e down before the caller detaches its driver by other
// means than a wrapped backend's claim (package devgrant detaches through
// a usbfs descriptor it hands to a driver process); Forget crosses it out
// once the driver is given back. Record of an entry already written does
// nothing.
func (j *Journal) Record(e JournalEntry) error {
	if err := e.check(); err != nil {
		return fmt.Errorf("%w: %w", ErrJournal, err)
	}
	_, err := j.add(e)
	return err
}

// Forget crosses out exactly e.
func (j *Journal) Forget(e JournalEntry) error { return j.drop(e) }

// JournalOf returns the journal b was wrapped with (Wrap), or nil; b may
// be wrapped again around the journal's wrapper (Unwrapper).
func JournalOf(b Backend) *Journal {
	for b != nil {
		if jb, ok := b.(*journaled); ok {
			return jb.j
		}
		u, ok := b.(Unwrapper)
		if !ok {
			return nil
		}
		b = u.Unwrap()
	}
	return nil
}

// Wrap returns b with every claim's detached kernel drivers journaled.
func (j *Journal) Wrap(b Backend) Backend {
	return &journaled{Backend: b, j: j, open: map[*journaledDevice]struct{}{}}
}

type journaled struct {
	Backend
	j    *Journal
	mu   sync.Mutex
	open map[*journaledDevice]struct{}
}

func (b *journaled) Open(ctx context.Context, sel Selector) (Device, error) {
	d, err := b.Backend.Open(ctx, sel)
	if err != nil {
		return nil, err
	}
	jd := &journaledDevice{Device: d, j: b.j, b: b}
	b.mu.Lock()
	b.open[jd] = struct{}{}
	b.mu.Unlock()
	return jd, nil
}

func (b *journaled) devices() []*journaledDevice {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*journaledDevice, 0, len(b.open))
	for d := range b.open {
		out = append(out, d)
	}
	return out
}

// Unwrap returns the wrapped backend.
func (b *journaled) Unwrap() Backend { return b.Backend }

// ReattachAll re-attaches through the wrapped backend and crosses out
// what is no longer detached.
func (b *journaled) ReattachAll() error {
	err := b.Backend.ReattachAll()
	var errs []error
	for _, d := range b.devices() {
		still := map[int]bool{}
		for _, k := range d.Detached() {
			still[k.Interface] = true
		}
		for _, e := range b.j.Entries() {
			if e.device(d.Info()) && !still[e.Interface] {
				errs = append(errs, b.j.remove(d.Info(), e.Interface))
			}
		}
	}
	return errors.Join(append(errs, err)...)
}

// Close closes the wrapped backend (every device re-attached or gone).
func (b *journaled) Close() error {
	err := b.Backend.Close()
	errs := []error{err}
	for _, d := range b.devices() {
		errs = append(errs, b.j.remove(d.Info(), -1))
	}
	return errors.Join(errs...)
}

// BindKernelDriver passes through to the wrapped backend.
func (b *journaled) BindKernelDriver(ctx context.Context, sel Selector, iface int, driver string) error {
	kb, ok := b.Backend.(KernelBinder)
	if !ok {
		return &OpError{Op: "re-attach " + driver, Err: ErrNotSupported}
	}
	return kb.BindKernelDriver(ctx, sel, iface, driver)
}

type journaledDevice struct {
	Device
	j *Journal
	b *journaled
}

func (d *journaledDevice) ClaimInterface(ctx context.Context, num, alt int) error {
	info := d.Info()
	entry := func(drv string) JournalEntry {
		return JournalEntry{Bus: info.Bus, Address: info.Address, Vendor: info.Vendor, Product: info.Product, Interface: num, Driver: drv}
	}
	// Write ahead: the driver the claim is about to detach is on record
	// before it is detached. A crash before the detach leaves an entry for
	// a driver still bound, which the next daemon's re-bind finds bound.
	var ahead *JournalEntry
	if r, ok := d.Device.(KernelDriverReader); ok {
		if drv, err := r.KernelDriver(num); err == nil && drv != "" && drv != "usbfs" {
			e := entry(drv)
			added, err := d.j.add(e)
			if err != nil {
				return err
			}
			if added {
				ahead = &e
			}
		}
	}
	detached := func(e JournalEntry) bool {
		for _, k := range d.Detached() {
			if k.Interface == num && entry(k.Driver) == e {
				return true
			}
		}
		return false
	}
	if err := d.Device.ClaimInterface(ctx, num, alt); err != nil {
		if ahead != nil && !detached(*ahead) {
			// A failed claim gives back what it detached; only a failed
			// give-back keeps the entry.
			_ = d.j.drop(*ahead)
		}
		return err
	}
	keep := false
	for _, k := range d.Detached() {
		if k.Interface != num {
			continue
		}
		e := entry(k.Driver)
		keep = keep || (ahead != nil && e == *ahead)
		if _, err := d.j.add(e); err != nil {
			// Unrecorded, a crash would strand the interface: give it back.
			_ = d.Device.ReleaseInterface(num)
			if ahead != nil {
				_ = d.j.drop(*ahead)
			}
			return err
		}
	}
	if ahead != nil && !keep {
		// The driver changed under the claim, or none was detached.
		return d.j.drop(*ahead)
	}
	return nil
}

func (d *journaledDevice) ReleaseInterface(num int) error {
	err := d.Device.ReleaseInterface(num)
	if jerr := d.j.remove(d.Info(), num); err == nil {
		err = jerr
	}
	return err
}

func (d *journaledDevice) Close() error {
	err := d.Device.Close()
	d.b.mu.Lock()
	delete(d.b.open, d)
	d.b.mu.Unlock()
	// Re-attached, or the device is gone: either way nothing is owed.
	return errors.Join(err, d.j.remove(d.Info(), -1))
}

var (
	_ Backend      = (*journaled)(nil)
	_ KernelBinder = (*journaled)(nil)
	_ Unwrapper    = (*journaled)(nil)
	_ Device       = (*journaledDevice)(nil)
)

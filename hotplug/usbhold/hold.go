package usbhold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
)

// ErrNotSupported: interface authorization is Linux's.
var ErrNotSupported = errors.New("not supported on this system")

// OpError is a hold's failure: Op ("gate", "hold", "give back",
// "recover", …), the root hub or interface it concerned, and the cause.
type OpError struct {
	Op   string
	Name string
	Err  error
}

func (e *OpError) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Name + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Config configures a hold.
type Config struct {
	// Sysfs is where sysfs is mounted; "" is /sys.
	Sysfs string
	// State is the state file (required): what the hold changed, written
	// before it is changed.
	State string
	// Personalities returns the personalities loaded now (the registry's
	// [driver.Registry.AllPersonalities]); the hold asks it for every
	// interface and on [Hold.Sync].
	Personalities func() []driver.Personality
	// Log gets what the hold does; nil: discarded.
	Log *slog.Logger
	// Relaunching, if set, reports whether a driver is coming back to a
	// nub that has none now: the out-of-process host relaunches a crashed
	// driver after a backoff (driver/host.Host.Relaunching). The watch
	// keeps such a nub's interface held, and looks again until the driver
	// is back or the relaunch is given up, so that a crash does not hand
	// the stick to usb-storage (a /dev/sdX) until the relaunched driver
	// detaches it again.
	Relaunching func(nub *driver.Service) bool
}

// Hold keeps kernel drivers off the USB interfaces a loaded personality
// will claim (see the package documentation). Its methods are safe for
// concurrent use.
type Hold struct {
	k           kernel
	path        string
	pers        func() []driver.Personality
	relaunching func(*driver.Service) bool
	log         *slog.Logger
	nheld       atomic.Int32 // len(st.Held), read without the lock by the watcher's filter

	mu     sync.Mutex
	st     State
	closed bool
	watch  *watcher
}

// New returns a hold after recovering what a previous daemon left (see
// [Recover]); no gate is set until [Hold.Sync].
func New(cfg Config) (*Hold, Report, error) {
	if err := supported(); err != nil {
		return nil, Report{}, &OpError{Op: "hold", Err: err}
	}
	if cfg.Sysfs == "" {
		cfg.Sysfs = "/sys"
	}
	return newHold(sysfs{root: cfg.Sysfs}, cfg)
}

func newHold(k kernel, cfg Config) (*Hold, Report, error) {
	if cfg.State == "" || cfg.Personalities == nil {
		return nil, Report{}, &OpError{Op: "hold", Err: errors.New("needs a state file and the personalities")}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep, err := recoverState(k, cfg.State)
	if err != nil {
		return nil, rep, err
	}
	return &Hold{k: k, path: cfg.State, pers: cfg.Personalities, relaunching: cfg.Relaunching, log: log, st: State{Version: stateVersion}}, rep, nil
}

// Report says what a recovery (or a lifted gate) undid.
type Report struct {
	Ungated    []string // root hubs whose default was set back to 1
	Authorized []string // interfaces authorized and probed (created while gated)
	GivenBack  []string // held interfaces probed
}

func (r Report) Empty() bool { return len(r.Ungated)+len(r.Authorized)+len(r.GivenBack) == 0 }

// Recover undoes what the state file at path records a hold changed: every
// gate is lifted, every interface created unauthorized under it is
// authorized and probed, every held interface still on its device and
// without a driver is probed; then the file is removed. What a daemon
// killed with gates set needs before the kernel's drivers bind new devices
// again; `drvctl unhold` runs it by hand.
func Recover(sysfsRoot, path string) (Report, error) {
	if err := supported(); err != nil {
		return Report{}, &OpError{Op: "recover", Err: err}
	}
	if sysfsRoot == "" {
		sysfsRoot = "/sys"
	}
	return recoverState(sysfs{root: sysfsRoot}, path)
}

func recoverState(k kernel, path string) (Report, error) {
	st, err := ReadState(path)
	if err != nil {
		return Report{}, &OpError{Op: "recover", Err: err}
	}
	rep, err := undo(k, st)
	if err != nil {
		// Keep the file: what could not be undone stays on record.
		return rep, &OpError{Op: "recover", Err: err}
	}
	if err := writeState(path, State{}); err != nil {
		return rep, &OpError{Op: "recover", Err: err}
	}
	return rep, nil
}

// undo lifts st's gates and gives back what they kept. Gates go first: an
// interface created after that is authorized by the kernel itself.
func undo(k kernel, st State) (Report, error) {
	var rep Report
	var errs []error
	for _, hub := range st.Gated {
		bus, _ := rootHubBus(hub)
		if err := k.SetAuthorizedDefault(hub, true); err != nil {
			if isGone(err) {
				continue // the controller went with its devices
			}
			errs = append(errs, &OpError{Op: "lift gate", Name: hub, Err: err})
			continue
		}
		rep.Ungated = append(rep.Ungated, hub)
		ifaces, err := k.Interfaces(bus)
		if err != nil {
			errs = append(errs, &OpError{Op: "list interfaces", Name: hub, Err: err})
			continue
		}
		for _, i := range ifaces {
			ok, err := k.Authorized(i)
			if err != nil || ok {
				continue
			}
			// Created while the gate was set and never decided (the
			// daemon was gone): the kernel gets it, as it would have.
			if err := authorizeAndProbe(k, i); err != nil {
				errs = append(errs, err)
				continue
			}
			rep.Authorized = append(rep.Authorized, i)
		}
	}
	for _, h := range st.Held {
		now, err := k.Device(h.Interface)
		if err != nil || now.Bus != h.Bus || now.Address != h.Address || now.Vendor != h.Vendor || now.Product != h.Product {
			continue // gone, or another device on that port: the kernel bound it afresh
		}
		if slices.Contains(rep.Authorized, h.Interface) {
			continue // probed above
		}
		if drv, err := k.Driver(h.Interface); err != nil || drv != "" {
			continue // claimed again, or bound
		}
		if err := authorizeAndProbe(k, h.Interface); err != nil {
			errs = append(errs, err)
			continue
		}
		rep.GivenBack = append(rep.GivenBack, h.Interface)
	}
	return rep, errors.Join(errs...)
}

func authorizeAndProbe(k kernel, iface string) error {
	if ok, err := k.Authorized(iface); err == nil && !ok {
		if err := k.Authorize(iface); err != nil && !isGone(err) {
			return &OpError{Op: "authorize", Name: iface, Err: err}
		}
	}
	// A driver that finds nothing to bind is not an error: the interface
	// stays as the kernel would have left it.
	if err := k.Probe(iface); err != nil && !isGone(err) {
		return &OpError{Op: "probe", Name: iface, Err: err}
	}
	return nil
}

// save writes the state; the caller holds mu.
func (h *Hold) saveLocked() error {
	h.nheld.Store(int32(len(h.st.Held)))
	if err := writeState(h.path, h.st); err != nil {
		return &OpError{Op: "save", Err: err}
	}
	return nil
}

// Sync sets the gates when a loaded personality holds (see [Holds]) and
// lifts them, giving back everything kept, when none does. Call it after
// the personalities changed (load, unload, a driver disabled).
func (h *Hold) Sync() error {
	want := len(Rules(h.pers())) > 0
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return &OpError{Op: "gate", Err: errors.New("hold closed")}
	}
	if !want {
		return h.liftLocked()
	}
	hubs, err := h.k.RootHubs()
	if err != nil {
		return &OpError{Op: "gate", Err: err}
	}
	var errs []error
	for _, hub := range hubs {
		errs = append(errs, h.gateLocked(hub))
	}
	return errors.Join(errs...)
}

// gateLocked sets hub's default to 0 unless it is 0 already (someone
// else's policy, or ours).
func (h *Hold) gateLocked(hub string) error {
	if slices.Contains(h.st.Gated, hub) {
		return nil
	}
	on, err := h.k.AuthorizedDefault(hub)
	if err != nil {
		return &OpError{Op: "gate", Name: hub, Err: err}
	}
	if !on {
		h.log.Info("usb hold: root hub denies interfaces by default already (another policy, e.g. usbguard): left alone", "hub", hub)
		return nil
	}
	// On record first: a crash right after the write leaves a gate the
	// next start lifts.
	h.st.Gated = append(h.st.Gated, hub)
	if err := h.saveLocked(); err != nil {
		h.st.Gated = h.st.Gated[:len(h.st.Gated)-1]
		return err
	}
	if err := h.k.SetAuthorizedDefault(hub, false); err != nil {
		h.st.Gated = slices.DeleteFunc(h.st.Gated, func(s string) bool { return s == hub })
		return errors.Join(&OpError{Op: "gate", Name: hub, Err: err}, h.saveLocked())
	}
	h.log.Debug("usb hold: gate set", "hub", hub)
	return nil
}

// liftLocked undoes everything and empties the state.
func (h *Hold) liftLocked() error {
	if h.st.empty() {
		return nil
	}
	rep, err := undo(h.k, h.st)
	if !rep.Empty() {
		h.log.Info("usb hold: gates lifted", "hubs", rep.Ungated, "authorized", rep.Authorized, "given_back", rep.GivenBack)
	}
	if err != nil {
		return err
	}
	h.st = State{Version: stateVersion}
	return h.saveLocked()
}

// Close lifts every gate and gives back every interface the hold kept,
// then removes the state file. The daemon calls it after its drivers have
// stopped.
func (h *Hold) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	w := h.watch
	h.watch = nil
	h.mu.Unlock()
	if w != nil {
		w.stop()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.liftLocked()
}

// Held lists the interfaces held now.
func (h *Hold) Held() []Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.st.Held)
}

// Gated lists the root hubs gated now.
func (h *Hold) Gated() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.st.Gated)
}

// Event acts on a uevent before anyone else sees it: a root hub that
// appears while gates are set is gated too; an interface created behind a
// gate is held for the personality that matches it, or authorized and
// probed at once; a held interface that goes is forgotten.
func (h *Hold) Event(ev *hotplug.Event) {
	if ev.Subsystem != "usb" || (ev.Action != hotplug.ActionAdd && ev.Action != hotplug.ActionRemove) {
		return
	}
	name := ev.Name()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	switch {
	case ev.Action == hotplug.ActionRemove && ev.DevType == "usb_interface":
		if i := h.st.held(name); i >= 0 {
			h.st.Held = slices.Delete(h.st.Held, i, i+1)
			h.logErr(h.saveLocked())
		}
	case ev.Action == hotplug.ActionAdd && ev.DevType == "usb_device" && len(h.st.Gated) > 0:
		if _, ok := rootHubBus(name); ok {
			h.logErr(h.gateLocked(name))
		}
	case ev.Action == hotplug.ActionAdd && ev.DevType == "usb_interface":
		h.logErr(h.interfaceLocked(ev, name))
	}
}

func (h *Hold) logErr(err error) {
	if err != nil {
		h.log.Error("usb hold", "err", err)
	}
}

func (h *Hold) interfaceLocked(ev *hotplug.Event, name string) error {
	bus, _, ok := interfaceBus(name)
	if !ok || !slices.Contains(h.st.Gated, rootHub(bus)) {
		return nil
	}
	if ok, err := h.k.Authorized(name); err != nil || ok {
		return nil // gone already, or not created behind the gate (coldplug)
	}
	props, err := InterfaceProperties(ev)
	claimant := ""
	if err == nil {
		claimant = Claimant(h.pers(), props)
	}
	if claimant == "" {
		// Nobody here wants it (or it cannot be described, and then no
		// nub is published for it): the kernel's driver binds now.
		if err := authorizeAndProbe(h.k, name); err != nil {
			return err
		}
		h.log.Debug("usb hold: interface given to the kernel", "interface", name)
		return nil
	}
	id, err := h.k.Device(name)
	if err != nil {
		if isGone(err) {
			return nil
		}
		return &OpError{Op: "hold", Name: name, Err: err}
	}
	id.Personality = claimant
	if h.st.held(name) >= 0 {
		h.st.Held = slices.DeleteFunc(h.st.Held, func(x Held) bool { return x.Interface == name })
	}
	h.st.Held = append(h.st.Held, id)
	if err := h.saveLocked(); err != nil {
		h.st.Held = h.st.Held[:len(h.st.Held)-1]
		// Unrecorded, a crash would strand it: the kernel gets it.
		return errors.Join(err, authorizeAndProbe(h.k, name))
	}
	// It stays unauthorized until drvkit's driver claims it (Claim): the
	// kernel sends this uevent before it probes the new interface, and an
	// interface authorized now could still be bound by that probe.
	h.log.Info("usb hold: interface kept from the kernel's drivers", "interface", name, "personality", claimant,
		"device", fmt.Sprintf("%04x:%04x", id.Vendor, id.Product))
	return nil
}

// GiveBack probes a held interface so that the kernel's driver binds, and
// forgets it: its nub has no driver any more. Not held: nothing happens.
func (h *Hold) GiveBack(iface string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := h.st.held(iface)
	if i < 0 {
		return nil
	}
	h.st.Held = slices.Delete(h.st.Held, i, i+1)
	err := authorizeAndProbe(h.k, iface)
	if err == nil {
		h.log.Info("usb hold: interface given back to the kernel", "interface", iface)
	}
	return errors.Join(err, h.saveLocked())
}

// configuredWithin bounds how long a claim waits for the kernel to finish
// configuring a device (its first probe of every interface).
const configuredWithin = 5 * time.Second

// Claim readies a held interface for drvkit's usbfs claim, which the
// kernel refuses on an unauthorized interface: once the kernel has
// finished configuring the device — its usb_device bound to the generic
// driver, which happens after it tried every interface's drivers — the
// interface is authorized, without a probe. An interface not held, or
// authorized already, is left as it is. The backend of [Hold.Wrap] calls
// it before every claim.
func (h *Hold) Claim(ctx context.Context, iface string) error {
	if !h.isHeld(iface) {
		return nil
	}
	if ok, err := h.k.Authorized(iface); err != nil || ok {
		return nil // gone (the claim will say so), or ready
	}
	_, dev, _ := interfaceBus(iface)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(ctx, configuredWithin)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		drv, err := h.k.Driver(dev)
		if isGone(err) {
			return nil // unplugged: the claim fails with the backend's ErrNoDevice
		}
		if err != nil {
			return &OpError{Op: "claim", Name: iface, Err: err}
		}
		if drv != "" {
			break
		}
		select {
		case <-ctx.Done():
			return &OpError{Op: "claim", Name: iface, Err: fmt.Errorf("device %s not configured by the kernel: %w", dev, ctx.Err())}
		case <-tick.C:
		}
	}
	if err := h.k.Authorize(iface); err != nil {
		if isGone(err) {
			return nil // unplugged meanwhile: the claim fails with the backend's ErrNoDevice
		}
		return &OpError{Op: "claim", Name: iface, Err: err}
	}
	h.log.Debug("usb hold: authorized for the claim", "interface", iface, "waited", time.Since(t0))
	return nil
}

// ReadyClaim is [Hold.Claim] for interface iface of the device at
// bus/addr, the numbers a usbfs node is named by: the held interface of
// that device with that number, if any, is authorized for the claim.
// Package devgrant calls it (through [usb.ReadyClaim] on the backend of
// [Hold.Wrap]) before it claims the interface on the usbfs descriptor it
// hands to a driver process.
func (h *Hold) ReadyClaim(ctx context.Context, bus, addr, iface int) error {
	name, ok := h.heldAt(bus, addr, iface)
	if !ok {
		return nil
	}
	return h.Claim(ctx, name)
}

// heldAt finds the held interface number iface of the device at bus/addr.
func (h *Hold) heldAt(bus, addr, iface int) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.st.Held {
		if x.Bus != bus || x.Address != addr {
			continue
		}
		if n, ok := interfaceNumber(x.Interface); ok && n == iface {
			return x.Interface, true
		}
	}
	return "", false
}

func (h *Hold) isHeld(iface string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st.held(iface) >= 0
}

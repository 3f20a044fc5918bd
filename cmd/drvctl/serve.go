package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbhold"
	"github.com/drvkit/drvkit/internal/sdnotify"
	"github.com/drvkit/drvkit/internal/statefile"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

const opSim = "sim"

func init() {
	register(&command{name: "serve", summary: "run the daemon: registry, hotplug, user clients", setup: setupServe})
}

type serveOptions struct {
	socket      string
	sim         string
	drivers     string
	logFormat   string
	logLevel    string
	trace       string
	socketGroup int
	allowUIDs   string
	allowGIDs   string
	adminUIDs   string
	adminGIDs   string
	readUIDs    string
	readGIDs    string
	// readListed: only root, admins and --read-uids/--read-gids may read
	// (--read-any-user=false); the default lets every local user read.
	readListed   bool
	anyUser      bool
	termTimeout  time.Duration
	closeTimeout time.Duration
	stateDir     string
	usbHold      bool
	directCalls  bool
	ioURing      bool
	sysfs        string // "" is /sys; tests point it elsewhere
	personality  personalityFlags
	observe      observeOptions
	bundles      bundleOptions
	limits       limitsFlag
}

func setupServe(fs *flag.FlagSet, e *env) func([]string) error {
	var o serveOptions
	sock := socketFlag(fs, e)
	fs.StringVar(&o.sim, "sim", "", "run on a simulated bus replaying this scenario `file`, one step a line: plug usb PORT vid=VVVV pid=PPPP ifaces=CC/SS/PP, unplug PORT, scsi add H:C:T:L [type=N], wait 100ms, repeat N … end")
	o.personality.table = builtinDrivers()
	fs.StringVar(&o.drivers, "drivers", "", "comma-separated `drivers` to load: "+strings.Join(o.personality.table.Names(), ", ")+
		" (default: sg on real hardware — usbstorage detaches the kernel's usb-storage, hidkbd reads the keyboards — and all on a simulated bus)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.StringVar(&o.trace, "trace", "all", "reference tracing: all, off, or comma-separated `classes` (overrides DRVKIT_REFTRACE)")
	fs.IntVar(&o.socketGroup, "socket-gid", -1, "group `gid` of the socket file (it matters when the socket is mode 0660: --read-any-user=false without --any-user); -1 keeps the daemon's group")
	fs.StringVar(&o.allowUIDs, "allow-uids", "", "open right: comma-separated `uids` that may open services (root always may)")
	fs.StringVar(&o.allowGIDs, "allow-gids", "", "open right: comma-separated `gids` whose members may open services")
	fs.BoolVar(&o.anyUser, "any-user", false, "open right: let anyone who can reach the socket open services")
	fs.Var(invertedBool{&o.readListed}, "read-any-user", "read right: let every local user read the daemon's state — inspect, monitor, drivers, status, why, leaks — as anyone may run ioreg or udevadm monitor; the socket is then mode 0666 and the policy decides (default true; false: only root, admins and --read-uids/--read-gids)")
	fs.StringVar(&o.readUIDs, "read-uids", "", "read right: comma-separated `uids` that may read the daemon's state when --read-any-user=false")
	fs.StringVar(&o.readGIDs, "read-gids", "", "read right: comma-separated `gids` whose members may read the daemon's state when --read-any-user=false")
	fs.StringVar(&o.adminUIDs, "admin-uids", "", "admin right: comma-separated `uids` that may load, unload, terminate and run sim steps, and see other users' processes (root always may)")
	fs.StringVar(&o.adminGIDs, "admin-gids", "", "admin right: comma-separated `gids` whose members have the admin right")
	fs.Var(&o.limits, "limits", limitsUsage())
	fs.DurationVar(&o.termTimeout, "terminate-timeout", 10*time.Second, "how long drvctl terminate waits for the service's free (a `duration`, 10ms to 24h)")
	fs.DurationVar(&o.closeTimeout, "shutdown-timeout", 15*time.Second, "how long shutdown waits for every service to be freed")
	fs.StringVar(&o.stateDir, "state-dir", "", "`directory` for what must outlive the daemon: the journal of kernel drivers it detached, re-attached at the next start if it was killed (with --sim also the simulated kernel's bindings); empty: no journal")
	fs.BoolVar(&o.ioURing, "io-uring", true, "send a driver's notification to many applications through io_uring, one system call per 64 (the daemon falls back to a write(2) each, and logs why, where the kernel or a seccomp filter refuses io_uring); false: always a write(2) each")
	fs.BoolVar(&o.directCalls, "direct-calls", true, "let an application's calls to a bundle's driver go straight to the driver's process, on a call channel the daemon hands over (Go SDK bundles); false: every call goes through the daemon, which then sees and bounds each one")
	fs.BoolVar(&o.usbHold, "usb-hold", true, "keep the kernel's drivers off the USB interfaces a loaded personality will claim (interface authorization: a stick usbstorage takes never shows as /dev/sdX); its state is in --state-dir, else "+defaultHoldDir+"; false: claim by detaching the kernel's driver, after it bound. Real hardware only")
	fs.Var(&o.personality, "personality", "register a driver of the table for the devices a match selects, repeatable: `name=N,driver=D,KEY=VALUE...[,score=S]`; "+
		"keys: "+personalityKeysHelp(o.personality.table)+" (e.g. name=gadget,driver=usbstorage,vid=1d50,pid=6018: that product's interfaces whatever their class; "+
		"the default score 100 beats the drivers' own personalities)")
	observeFlags(fs, &o.observe)
	bundleFlags(fs, &o.bundles)
	return func(args []string) error {
		if len(args) > 0 {
			return usagef("serve takes no arguments, got %q", args)
		}
		o.socket = sock()
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return serve(ctx, o, e.stderr, nil)
	}
}

// daemon is everything `drvctl serve` runs.
type daemon struct {
	opts   serveOptions
	log    *slog.Logger
	reg    *driver.Registry
	hub    *monitorHub
	usb    usb.Backend
	hid    hid.Backend
	sim    *sim.Sim // nil on real hardware
	simBus *simBus  // nil on real hardware
	bridge *hotplug.Bridge
	srv    *server.Server
	// netlink is the kernel uevent source (nil on a simulated bus);
	// observer is the --http listener (nil when off).
	netlink  *hotplug.Netlink
	observer *observer

	// policy is the socket's access policy; the --http listener applies
	// its read right too.
	policy *server.Policy

	drivers *drivertable.Table     // what --drivers and --personality may name
	res     *drivertable.Resources // what the daemon wires for drivers

	mu     sync.Mutex
	loaded map[string]bool // the names of the personalities registered and not unloaded

	bundles *bundleSet    // bundles loaded or refused, drivers' last errors
	access  *bundleAccess // the loaded bundles' [access] tables, which the policy enforces
	host    *host.Host    // runs the bundles' drivers in their processes

	hold *usbhold.Hold // nil: off (--usb-hold=false, a simulated bus, or it could not start)

	started time.Time
}

// driverKnown reports whether unload has something to do with name: a
// personality of that name is registered, or instances of one live on.
func (d *daemon) driverKnown(name string) bool {
	d.mu.Lock()
	ok := d.loaded[name]
	d.mu.Unlock()
	if ok {
		return true
	}
	for _, s := range d.reg.Services() {
		if p := s.Personality(); p != nil && p.Name == name {
			return true
		}
	}
	return false
}

func (d *daemon) loadedNames() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.loaded))
	for n := range d.loaded {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (d *daemon) setLoaded(name string, on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if on {
		d.loaded[name] = true
	} else {
		delete(d.loaded, name)
	}
}

// serve runs the daemon until ctx ends, then shuts down in order: clients
// first (each gets ClientDied), then the event source and the bridge, then
// every service terminated leaf first, then kernel drivers re-attached. It
// fails if anything leaked. ready, if not nil, is called once the socket
// accepts connections (tests use it).
func serve(ctx context.Context, o serveOptions, stderr io.Writer, ready func(*daemon)) (err error) {
	log, err := newLogger(stderr, o.logFormat, o.logLevel)
	if err != nil {
		return usagef("%v", err)
	}
	if err := applyTrace(o.trace); err != nil {
		return usagef("%v", err)
	}
	// A broken reference rule is a bug in a driver: report it loudly but
	// keep serving everyone else.
	prevHandler := refcount.SetErrorHandler(func(e *refcount.Error) { log.Error("reference error", "err", e.Error()) })
	defer func() { refcount.SetErrorHandler(prevHandler) }()

	policy, err := buildPolicy(o)
	if err != nil {
		return usagef("%v", err)
	}
	if err := checkServeDurations(o); err != nil {
		return usagef("%v", err)
	}
	if o.stateDir != "" {
		// Root reads this directory back at the next start and writes
		// what it says into sysfs: nobody else may write there.
		if err := statefile.CheckDir(o.stateDir); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	tbl := o.personality.table
	if tbl == nil {
		tbl = builtinDrivers()
	}
	drivers := o.drivers
	if drivers == "" {
		drivers = "sg"
		if o.sim != "" {
			drivers = "usbstorage,sg,hidkbd"
		}
	}
	// Every name is looked up before anything starts: a typo is a usage
	// error, not a daemon running without the driver.
	var entries []*drivertable.Entry
	for _, name := range strings.Split(drivers, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		e, err := tbl.Lookup(name)
		if err != nil {
			return usagef("%v", err)
		}
		entries = append(entries, e)
	}
	custom := make([]*drivertable.Entry, len(o.personality.specs))
	for i, ps := range o.personality.specs {
		e, err := tbl.Lookup(ps.Driver)
		if err != nil {
			return usagef("--personality %s: %v", ps.Name, err)
		}
		custom[i] = e
	}

	d := &daemon{opts: o, log: log, hub: newMonitorHub(), loaded: map[string]bool{}, drivers: tbl, policy: &policy, started: time.Now()}
	d.access = newBundleAccess()
	policy.Services = d.access
	d.reg = driver.NewRegistry(driver.WithLogger(log))
	cancelLifecycle := d.reg.SubscribeLifecycle(d.hub.lifecycle)
	if log.Enabled(ctx, slog.LevelDebug) {
		// At debug level the log carries what `drvctl monitor` shows, so
		// a daemon's stderr alone explains what it did.
		cancelDebug := d.hub.subscribe(func(e monitorEvent) { logMonitorEvent(log, e) })
		cancelLifecycle = func(prev func()) func() { return func() { prev(); cancelDebug() } }(cancelLifecycle)
	}
	// undo holds what to release if setting up fails, run last first.
	undo := []func(){func() { _ = d.reg.Close(context.Background()) }, cancelLifecycle}
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	if d.observer, err = newObserver(d, o.observe); err != nil {
		return fail(err)
	}
	if d.observer != nil {
		undo = append(undo, d.observer.close)
	}

	var src hotplug.Source
	var sysfsRoot string
	var simBusSrc *simBus
	if o.sim != "" {
		sc, err := loadScenario(o.sim)
		if err != nil {
			return fail(err)
		}
		sysfsRoot, err = os.MkdirTemp("", "drvkit-sim-sysfs-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(sysfsRoot)
		hidFake := hidsim.New()
		d.hid = hidFake
		reports := func(r sim.Report) {
			if dev := hidFake.Device(r.Node); dev != nil {
				dev.Input(r.Data)
			}
		}
		if d.sim, err = sim.New(sc, sim.Config{SysfsDir: sysfsRoot, Live: true, Reports: reports}); err != nil {
			return fail(err)
		}
		undo = append(undo, func() { _ = d.sim.Close() })
		fake := usbsim.New()
		d.usb = fake
		undo = append(undo, func() { _ = fake.Close() })
		if o.stateDir != "" {
			// The real kernel keeps interface bindings across daemons; the
			// fake one lives in this process, so it keeps them in a file.
			if err := fake.PersistKernelState(filepath.Join(o.stateDir, "sim-kernel.json")); err != nil {
				return fail(err)
			}
		}
		simBusSrc = newSimBus(d.sim, fake, hidFake, sysfsRoot)
		simBusSrc.followKernelDrivers(d.sim.Inject, log)
		d.simBus = simBusSrc
		src = simBusSrc
	} else {
		gousb := usb.NewGousb()
		d.usb, d.hid = gousb, hid.Hidraw{}
		undo = append(undo, func() { _ = gousb.Close() })
		nl, err := hotplug.NewNetlink(hotplug.NetlinkConfig{Coldplug: true, Classes: buses.Classes(), Log: log, OnOverflow: d.hub.kernelOverflow})
		if err != nil {
			return fail(fmt.Errorf("kernel uevents: %w", err))
		}
		src = nl
		d.netlink = nl
		if o.usbHold {
			// Before anything is published: what a killed predecessor
			// kept is given back, and every interface is decided before
			// the bridge sees it.
			if d.hold = d.startHold(); d.hold != nil {
				undo = append(undo, func() { _ = d.hold.Close() })
				src = d.hold.Source(src)
			}
		}
	}
	ms := &monitoredSource{Source: src, hub: d.hub, coldplugDone: make(chan struct{})}
	if d.netlink != nil {
		ms.coldplugLeft = d.netlink.ColdplugEvents()
	}
	ms.checkColdplug()
	src = ms
	undo = append(undo, func() { _ = src.Close() })
	if o.stateDir != "" {
		if err := d.journalKernelDrivers(ctx, simBusSrc); err != nil {
			return fail(err)
		}
	}
	if d.hold != nil {
		// A held interface is authorized just before a driver claims it.
		d.usb = d.hold.Wrap(d.usb)
	}

	d.res = d.resources()
	for _, e := range entries {
		ps, err := e.Defaults(d.res)
		if err != nil {
			return fail(err)
		}
		for _, p := range ps {
			if err := d.reg.RegisterPersonality(p); err != nil {
				log.Error("register personality", "driver", e.Name, "err", err)
				continue
			}
			d.setLoaded(p.Name, true)
		}
	}
	for i, ps := range o.personality.specs {
		p, err := ps.personality(custom[i], d.res)
		if err != nil {
			return fail(err)
		}
		if err := d.reg.RegisterPersonality(p); err != nil {
			log.Error("register personality", "personality", ps.Name, "err", err)
			continue
		}
		d.setLoaded(p.Name, true)
		log.Info("personality", "name", ps.Name, "driver", ps.Driver, "match", ps.matchString(), "score", ps.Score)
	}
	// A bundle disabled after crashes leaves the personalities: the USB
	// hold follows, as after an unload.
	d.host = host.New(host.Config{Registry: d.reg, Resources: d.res, Log: log, Disabled: func(string) { d.syncHold() }})
	undo = append(undo, d.host.Close)
	d.startBundles()
	if d.hold != nil {
		if err := d.hold.Watch(d.reg); err != nil {
			return fail(err)
		}
		d.syncHold()
	}

	d.srv, err = server.Listen(&daemonBackend{RegistryBackend: server.NewRegistryBackend(d.reg), hub: d.hub, policy: d.policy, sessions: d.observer.userClientHooks()}, server.Config{
		Path: o.socket, Mode: socketMode(o), GID: o.socketGroup, Policy: policy, Admin: d.admin, Log: log, Limits: o.limits.l,
		NoDirectCalls: !o.directCalls,
		NoIOURing:     !o.ioURing,
		OnDisconnect: func(c userclient.Cred, reason error) {
			log.Debug("client disconnected", "pid", c.PID, "uid", c.UID, "reason", reason)
		},
	})
	if err != nil {
		// The server's error names the socket ("listen PATH: …").
		var oe *server.OpError
		if errors.As(err, &oe) && oe.Path != "" {
			return fail(err)
		}
		return fail(fmt.Errorf("socket %s: %w", o.socket, err))
	}

	d.bridge = hotplug.NewBridge(d.reg, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: sysfsRoot, Logger: log})
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := d.bridge.Run(runCtx, src); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, hotplug.ErrClosed) {
			log.Error("event source ended", "err", err)
		}
	}()
	if d.observer != nil {
		d.observer.serve()
	}
	log.Info("serving", "socket", o.socket, "sim", o.sim, "drivers", drivers)
	notifier := sdnotify.FromEnv()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.notifyReady(runCtx, ms.coldplugDone, notifier)
	}()
	if ready != nil {
		ready(d)
	}

	<-ctx.Done()
	log.Info("shutting down")
	if err := notifier.Notify(sdnotify.Stopping + "\nSTATUS=shutting down: terminating every service"); err != nil {
		log.Warn("systemd notification", "err", err)
	}
	if d.observer != nil {
		d.observer.close()
	}

	// No device comes or goes from here on (a kernel driver re-attached by
	// a stopping driver must not publish into a registry shutting down).
	stopRun()
	src.Close()
	wg.Wait()
	_ = d.bridge.Close()
	// No crashed driver is relaunched into a registry going away; the
	// bundles' processes stop with their instances below.
	d.host.Close()
	// Applications hear why their devices go — ServiceIsTerminated and
	// ServiceIsRequestingClose with the cause "shutdown" — and have a
	// moment to close them, as they would for an unplug; a registry nobody
	// holds is freed within it, while the monitors still watch. Then
	// clients go: the user clients of those that did not close are
	// terminated and release their providers, so no termination below
	// waits on an application.
	d.reg.Root().TerminateWith(driver.CauseShutdown)
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), min(shutdownClientGrace, o.closeTimeout))
	_ = d.reg.WaitQuiet(graceCtx)
	cancelGrace()
	_ = d.srv.Close()
	cancelLifecycle()
	closeCtx, cancel := context.WithTimeout(context.Background(), o.closeTimeout)
	defer cancel()
	closeErr := d.reg.Close(closeCtx)
	// What the registry still lists was never freed, whatever the tracing:
	// the registry knows its services without refcount's help.
	unfreed := d.reg.Services()
	if err := d.usb.ReattachAll(); err != nil {
		log.Error("re-attaching kernel drivers", "err", err)
	}
	_ = d.usb.Close()
	if d.hold != nil {
		// Every driver has let go: the gates are lifted and the kernel's
		// drivers get what the hold kept.
		if err := d.hold.Close(); err != nil {
			log.Error("usb hold", "err", err)
		}
	}
	return checkShutdown(log, stderr, o.trace, unfreed, closeErr)
}

// shutdownClientGrace is how long a shutdown lets applications close what
// they have open after they were told the daemon is stopping.
const shutdownClientGrace = 2 * time.Second

// resources is what the daemon wires for the drivers of its table, by the
// keys their entries need: the USB backend (libusb, or the simulator's fake,
// in the detach journal with a state directory), the opener of sg nodes
// (the real nodes, or the simulated disks) and the hidraw backend (the
// kernel's nodes, or the simulator's keyboards).
func (d *daemon) resources() *drivertable.Resources {
	res := drivertable.NewResources()
	drivertable.Provide(res, usbstorage.BackendKey, func() (usb.Backend, error) { return d.usb, nil })
	drivertable.Provide(res, hidkbd.BackendKey, func() (hid.Backend, error) { return d.hid, nil })
	drivertable.Provide(res, sg.OpenerKey, func() (sg.Opener, error) {
		if d.simBus != nil {
			return d.simBus.openSG, nil
		}
		return sg.OpenSG, nil
	})
	return res
}

// checkShutdown decides serve's exit: an error, with the leak report on
// stderr, when a service was not freed (known to the registry, traced or
// not) or a traced object of any class is still alive. Objects that are not
// services are visible only when traced: the log says so when tracing was
// not "all".
func checkShutdown(log *slog.Logger, stderr io.Writer, trace string, unfreed []*driver.Service, closeErr error) error {
	live := refcount.Live()
	partial := trace != "" && trace != "all"
	scope := "all classes traced"
	if partial {
		scope = fmt.Sprintf("object-level check covered only the traced classes (--trace %s)", trace)
	}
	if len(unfreed) == 0 && closeErr == nil && len(live) == 0 {
		if partial {
			log.Info("shutdown complete: every service freed; no traced object leaked", "trace", trace, "note", scope)
		} else {
			log.Info("shutdown complete: every service freed, nothing leaked")
		}
		return nil
	}
	fmt.Fprintln(stderr, "drvctl serve: objects leaked at shutdown:")
	if len(unfreed) > 0 {
		fmt.Fprintf(stderr, "%d service(s) never freed:\n", len(unfreed))
		for _, s := range unfreed {
			fmt.Fprintf(stderr, "  %s: retain %d, %s\n", s, s.RetainCount(), map[bool]string{true: "active", false: "terminated"}[s.State().Active])
		}
	}
	if closeErr != nil { // what blocks each one: holders with stacks when traced
		fmt.Fprintf(stderr, "%v\n", closeErr)
	}
	if len(live) > 0 {
		_ = refcount.WriteText(stderr)
	}
	if partial {
		fmt.Fprintf(stderr, "note: the %s\n", scope)
	}
	switch {
	case len(unfreed) > 0:
		return fmt.Errorf("shutdown: %d service(s) never freed (leak report above)", len(unfreed))
	case closeErr != nil:
		return fmt.Errorf("shutdown: %w", closeErr)
	}
	return fmt.Errorf("shutdown: %d classes have live objects (leak report above)", len(live))
}

// journalKernelDrivers wraps the USB backend with the journal of detached
// kernel drivers kept in the state directory and re-attaches what a killed
// predecessor left detached: at once for the devices present (real
// hardware), as each device is enumerated on a simulated bus.
func (d *daemon) journalKernelDrivers(ctx context.Context, sim *simBus) error {
	j, err := usb.OpenJournal(filepath.Join(d.opts.stateDir, "usb-detached.json"))
	if err != nil {
		return err
	}
	d.usb = j.Wrap(d.usb)
	report := func(done []usb.JournalEntry, err error) {
		for _, e := range done {
			d.log.Warn("re-attached a kernel driver a previous daemon left detached", "driver", e.Driver,
				"device", fmt.Sprintf("%03d/%03d", e.Bus, e.Address), "interface", e.Interface)
		}
		if err != nil {
			d.log.Error("re-attaching kernel drivers left detached", "err", err)
		}
	}
	if sim != nil {
		sim.onPlug = func(info usb.DeviceInfo) { report(j.RecoverDevice(ctx, d.usb, info)) }
		return nil
	}
	report(j.Recover(ctx, d.usb))
	return nil
}

// monitoredSource copies every event to the monitor before the bridge
// sees it, and tells when the coldplug walk's events have been handled.
type monitoredSource struct {
	hotplug.Source
	hub *monitorHub
	// coldplugLeft counts the coldplug events not yet handled (Next is
	// single-consumer: only the bridge's goroutine touches it);
	// coldplugDone is closed when it reaches 0.
	coldplugLeft int
	coldplugDone chan struct{}
	closed       bool
}

// checkColdplug closes coldplugDone once every coldplug event was
// returned and the bridge came back for more: it has handled the last.
func (m *monitoredSource) checkColdplug() {
	if m.coldplugLeft <= 0 && !m.closed {
		m.closed = true
		close(m.coldplugDone)
	}
}

func (m *monitoredSource) Next(ctx context.Context) (hotplug.Event, error) {
	m.checkColdplug()
	ev, err := m.Source.Next(ctx)
	if err == nil {
		if ev.Origin == hotplug.OriginColdplug {
			m.coldplugLeft--
		}
		m.hub.kernel(&ev, time.Now())
	}
	return ev, err
}

// notifyReady tells systemd READY=1 (Type=notify) once the devices found
// at start are published and their drivers started — the coldplug walk
// handled and the bridge flushed — then, under WatchdogSec=, pings
// WATCHDOG=1 for as long as the bridge still flushes within the interval:
// a wedged bridge stops the pings and systemd restarts the daemon.
func (d *daemon) notifyReady(ctx context.Context, coldplugDone <-chan struct{}, n *sdnotify.Notifier) {
	select {
	case <-coldplugDone:
	case <-ctx.Done():
		return
	}
	if err := d.bridge.Flush(ctx); err != nil {
		return
	}
	st := d.status(time.Now())
	d.log.Info("ready", "devices", st.Devices, "driver_instances", st.Instances)
	if err := n.Notify(fmt.Sprintf("%s\nSTATUS=serving %d device(s), %d driver instance(s)", sdnotify.Ready, st.Devices, st.Instances)); err != nil {
		d.log.Warn("systemd notification", "err", err)
	}
	iv := sdnotify.WatchdogInterval()
	if iv <= 0 || !n.Enabled() {
		return
	}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		fctx, cancel := context.WithTimeout(ctx, iv)
		err := d.bridge.Flush(fctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("watchdog: the hotplug bridge did not flush within the interval; not pinging", "interval", iv, "err", err)
			}
			continue
		}
		if err := n.Notify(sdnotify.Watchdog); err != nil {
			d.log.Warn("systemd watchdog", "err", err)
		}
	}
}

func loadScenario(path string) (*sim.Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	return sim.ParseScenario(filepath.Base(path), f)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

func applyTrace(spec string) error {
	switch spec {
	case "", "all":
		refcount.TraceAll()
	case "off":
		refcount.TraceOff()
	default:
		var classes []string
		for _, c := range strings.Split(spec, ",") {
			if c = strings.TrimSpace(c); c != "" {
				classes = append(classes, c)
			}
		}
		if len(classes) == 0 {
			return fmt.Errorf("--trace %q names no class", spec)
		}
		refcount.Trace(classes...)
	}
	return nil
}

func parseIDs(flagName, list string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil || n > maxID {
			return nil, fmt.Errorf("--%s: %q is not a numeric id from 0 to %d", flagName, f, int64(maxID))
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// invertedBool is a boolean flag stored negated, so that the zero
// serveOptions has the flag's default (true).
type invertedBool struct{ p *bool }

func (b invertedBool) String() string {
	if b.p == nil || !*b.p {
		return "true"
	}
	return "false"
}
func (b invertedBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	*b.p = !v
	return nil
}
func (b invertedBool) IsBoolFlag() bool { return true }

// The hints that end the policy's refusals: which flags of drvctl serve
// grant the missing right.
const (
	openHint  = "drvctl serve --allow-uids, --allow-gids or --any-user grant it"
	readHint  = "drvctl serve --read-uids or --read-gids grant it, or --read-any-user to everyone"
	adminHint = "drvctl serve --admin-uids or --admin-gids grant it"
)

// readOps are the administrative calls that only read, for which the read
// right is enough; every other call needs the admin right.
var readOps = []string{opInspect, opHistory, opLeaks, opWhy, opBlockers, opDrivers, opStatus}

func buildPolicy(o serveOptions) (server.Policy, error) {
	var p server.Policy
	lists := []struct {
		flag, list string
		dst        *[]uint32
	}{
		{"allow-uids", o.allowUIDs, nil}, {"allow-gids", o.allowGIDs, nil},
		{"admin-uids", o.adminUIDs, &p.AdminUIDs}, {"admin-gids", o.adminGIDs, &p.AdminGIDs},
		{"read-uids", o.readUIDs, &p.ReadUIDs}, {"read-gids", o.readGIDs, &p.ReadGIDs},
	}
	var uids, gids []uint32
	for i, l := range lists {
		ids, err := parseIDs(l.flag, l.list)
		if err != nil {
			return p, err
		}
		switch {
		case i == 0:
			uids = ids
		case i == 1:
			gids = ids
		default:
			*l.dst = ids
		}
	}
	if err := checkSocketGID(o.socketGroup); err != nil {
		return p, err
	}
	if err := checkReachable(o, uids, gids); err != nil {
		return p, err
	}
	// The monitor and the read verbs show every device and every uevent;
	// the daemon hides what identifies other users' processes from
	// readers who are not admins (viewer).
	p.ReadAnyUser = !o.readListed
	p.ReadClasses = []string{monitorClass}
	p.ReadOps = readOps
	p.OpenHint, p.ReadHint, p.AdminHint = openHint, readHint, adminHint
	if o.anyUser || len(uids) > 0 || len(gids) > 0 {
		p.Rules = append(p.Rules, server.Rule{AnyUser: o.anyUser, UIDs: uids, GIDs: gids})
	}
	return p, nil
}

// socketMode is the socket file's mode: anyone may connect when anyone
// may read or open (the policy checks every connection's credentials),
// else the daemon's user and the socket's group only.
func socketMode(o serveOptions) os.FileMode {
	if !o.readListed || o.anyUser {
		return 0o666
	}
	return 0o660
}

// admin serves the administrative calls; the server has checked the policy.
func (d *daemon) admin(ctx context.Context, cred userclient.Cred, op string, args json.RawMessage, _ []byte) (any, []byte, error) {
	decode := func(v any) error {
		if len(args) == 0 {
			return nil
		}
		if err := json.Unmarshal(args, v); err != nil {
			return fmt.Errorf("bad arguments: %w", err)
		}
		return nil
	}
	v := viewerOf(d.policy, cred)
	switch op {
	case opInspect:
		var q inspectQuery
		if err := decode(&q); err != nil {
			return nil, nil, err
		}
		sel := q.selectServices(sortedServices(d.reg))
		if len(sel) == 0 && q.Target != "" {
			return nil, nil, &notFoundError{msg: fmt.Sprintf("no service %q: want an ID, Class@name, a name or a device path (see drvctl inspect)", q.Target)}
		}
		return inspectStream{services: sel, v: v}, nil, nil
	case opStatus:
		return d.status(time.Now()), nil, nil
	case opHistory:
		var f monitorFilter
		if err := decode(&f); err != nil {
			return nil, nil, err
		}
		ev, dropped := d.hub.History()
		kept := ev[:0]
		for i := range ev {
			if f.match(&ev[i]) {
				v.event(&ev[i])
				kept = append(kept, ev[i])
			}
		}
		ev = kept
		return historyResult{Events: ev, Dropped: dropped}, nil, nil
	case opTerminate:
		var a idArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		res, err := adminTerminate(ctx, d.reg, a, d.opts.termTimeout)
		return res, nil, err
	case opUnload:
		var a unloadArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		if a.Driver != "" && !d.driverKnown(a.Driver) {
			return nil, nil, &notFoundError{msg: fmt.Sprintf("no driver %q is loaded (loaded: %s)", a.Driver, d.loadedNames())}
		}
		res, err := d.unloadDriver(ctx, a)
		return res, nil, err
	case opDrivers, opLoad:
		res, err := d.bundleAdmin(op, decode)
		return res, nil, err
	case opBlockers:
		var a unloadArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		bl := adminBlockers(d.reg, a.Driver)
		for i := range bl {
			bl[i].Service, bl[i].What = string(v.text([]byte(bl[i].Service))), string(v.text([]byte(bl[i].What)))
			for j := range bl[i].Stacks {
				bl[i].Stacks[j] = string(v.text([]byte(bl[i].Stacks[j])))
			}
		}
		return bl, nil, nil
	case opLeaks:
		var a leaksArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		if a.Format == "pprof" && !v.admin {
			// A profile's labels cannot be redacted like text.
			return nil, nil, fmt.Errorf("%w: a pprof profile names every holder, other users' processes too: it is for administrators (-o text and -o json are not)", userclient.ErrPermission)
		}
		out, err := adminLeaks(d.reg, a)
		return nil, v.text(out), err
	case opWhy:
		var a idArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		text, err := adminWhy(d.reg, a)
		return nil, v.text([]byte(text)), err
	case opSim:
		var a simArgs
		if err := decode(&a); err != nil {
			return nil, nil, err
		}
		return nil, nil, d.inject(ctx, a.Steps)
	}
	return nil, nil, fmt.Errorf("unknown administrative operation %q", op)
}

// stepError is a scenario step drvctl sim was given that failed, said as
// "step N: …": the steps came from the command line (or -f), which has no
// file name of its own.
type stepError struct{ se *sim.ScenarioError }

func (e *stepError) Error() string { return fmt.Sprintf("step %d: %s", e.se.Line, e.se.Msg) }
func (e *stepError) Unwrap() error { return e.se }

func stepErr(err error) error {
	var se *sim.ScenarioError
	if errors.As(err, &se) {
		return &stepError{se: se}
	}
	return err
}

type simArgs struct {
	Steps string `json:"steps"`
}

// inject runs scenario steps on the simulated bus and waits until the
// registry has followed them (drivers started or terminated).
func (d *daemon) inject(ctx context.Context, steps string) error {
	if d.sim == nil {
		return errors.New("the daemon is not running on a simulated bus (serve --sim)")
	}
	frag, err := sim.ParseScenarioFragment("sim", steps)
	if err != nil {
		return stepErr(err)
	}
	// Inject returns once the bridge has handled every event; Flush waits
	// for the publications those events queued. A driver that started or
	// stopped may have claimed or released an interface, which the
	// simulated kernel reports with events of its own: wait for those too
	// (a claim's events start nothing that claims again, so this settles).
	if err := d.sim.Inject(ctx, frag); err != nil {
		return stepErr(err)
	}
	for {
		if err := d.bridge.Flush(ctx); err != nil {
			return err
		}
		if d.simBus.idle() {
			return nil
		}
		if err := d.simBus.waitKernelDrivers(ctx); err != nil {
			return err
		}
	}
}

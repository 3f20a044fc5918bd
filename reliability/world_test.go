package reliability

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/userclient/server"
)

// The topology: a USB stick at port 2-1 with a mass-storage interface
// (usbstorage on the usbtest fake, kernel driver usb-storage detached while
// it runs) and a vendor-specific one (vendorDriver: jobs, methods, every
// callback). Each driver instance gets two clients doing I/O.
const (
	plugLine    = "plug usb 2-1 vid=46f4 pid=0001 manufacturer=DRVKIT product=Explorer serial=EXPLORE ifaces=08/06/50,ff/00/00\n"
	unplugLine  = "unplug 2-1\n"
	vendorName  = "vendord"
	vendorClass = "VendorDriver"
	clientClass = "EmbeddedClient"
	startJobs   = 6 // job concurrency is 4: two stay queued
)

var discard = slog.New(slog.DiscardHandler)

// eventCounts is how many uevents the plug and the unplug produce (the
// simulator is deterministic), so a run knows when the bridge saw them all.
var eventCounts = sync.OnceValues(func() ([2]int, error) {
	var n [2]int
	for i, text := range []string{plugLine, plugLine + unplugLine} {
		sc, err := sim.ParseScenarioString("count", text)
		if err != nil {
			return n, err
		}
		src, err := sim.New(sc, sim.Config{})
		if err != nil {
			return n, err
		}
		for {
			_, err := src.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				src.Close()
				return n, err
			}
			n[i]++
		}
		src.Close()
	}
	n[1] -= n[0]
	return n, nil
})

// world is one run's topology and its bookkeeping.
type world struct {
	reg     *driver.Registry
	backend *usbtest.Backend
	stick   *usbtest.Device
	dir     string
	sim     *sim.Sim
	bridge  *hotplug.Bridge
	pumpEnd chan struct{}

	evMu   sync.Mutex
	events []driver.LifecycleEvent
	unsub  func()

	hmu     sync.Mutex
	hcond   *sync.Cond
	handled int

	unplugMu  sync.Mutex
	unplugged bool
	closing   atomic.Bool

	// Applications: embedded clients and, with procs, a userclient
	// server with application processes.
	procs   bool
	sock    string
	srv     *server.Server
	cmu     sync.Mutex
	clients []member
	async   sync.WaitGroup // actions started by faults

	jobsSubmitted, jobsFreed atomic.Int64
	calls, callErrs          atomic.Int64
	hangs                    atomic.Int64

	vmu        sync.Mutex
	violations []string
	notes      []string
}

func (w *world) violate(format string, args ...any) {
	w.vmu.Lock()
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
	w.vmu.Unlock()
}

func (w *world) note(format string, args ...any) {
	w.vmu.Lock()
	w.notes = append(w.notes, fmt.Sprintf(format, args...))
	w.vmu.Unlock()
}

// newWorld builds the registry, the fake device and the simulator; up
// plugs the device.
func newWorld(procs bool) (*world, error) {
	w := &world{reg: driver.NewRegistry(driver.WithLogger(discard)), backend: usbtest.New(), pumpEnd: make(chan struct{}), procs: procs}
	w.hcond = sync.NewCond(&w.hmu)
	w.unsub = w.reg.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		w.evMu.Lock()
		w.events = append(w.events, e)
		w.evMu.Unlock()
	})
	// The simulator gives the first device on bus 2 the address 2.
	_, w.stick = w.backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 2, Vendor: 0x46f4, Product: 1, Serial: "EXPLORE"},
		scsitest.NewDisk(64, 512))
	if err := w.reg.RegisterPersonality(usbstorage.Personality(w.backend)); err != nil {
		return w, err
	}
	if err := w.reg.RegisterPersonality(vendorPersonality(w)); err != nil {
		return w, err
	}
	dir, err := os.MkdirTemp("", "drvkit-explore-")
	if err != nil {
		return w, err
	}
	w.dir = dir
	if procs {
		w.sock = filepath.Join(dir, "drvkit.sock")
		w.srv, err = server.Listen(server.NewRegistryBackend(w.reg), server.Config{Path: w.sock, GID: -1,
			Policy: server.Policy{Rules: []server.Rule{{AnyUser: true}}}})
		if err != nil {
			return w, err
		}
	}
	sc, err := sim.ParseScenarioString("explore", plugLine)
	if err != nil {
		return w, err
	}
	if w.sim, err = sim.New(sc, sim.Config{SysfsDir: dir, Live: true}); err != nil {
		return w, err
	}
	w.bridge = hotplug.NewBridge(w.reg, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: dir, Logger: discard})
	go w.pump()
	return w, nil
}

// pump is the bridge's event loop, counting what it handled.
func (w *world) pump() {
	defer close(w.pumpEnd)
	for {
		ev, err := w.sim.Next(context.Background())
		if err != nil {
			w.hmu.Lock()
			w.handled = -1 << 30
			w.hcond.Broadcast()
			w.hmu.Unlock()
			return
		}
		w.bridge.Handle(ev)
		w.hmu.Lock()
		w.handled++
		w.hcond.Broadcast()
		w.hmu.Unlock()
	}
}

func (w *world) waitHandled(n int) bool {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	for w.handled >= 0 && w.handled < n {
		w.hcond.Wait()
	}
	return w.handled >= n
}

// up waits for the plug's events and publications, then attaches two
// clients to each driver instance that started and starts their I/O.
// Faults may have removed any part of it: what is missing is skipped.
func (w *world) up(ctx context.Context) error {
	n, err := eventCounts()
	if err != nil {
		return err
	}
	w.waitHandled(n[0])
	if err := w.bridge.Flush(ctx); err != nil && !errors.Is(err, hotplug.ErrClosed) {
		return fmt.Errorf("bridge flush: %w", err)
	}
	for _, cls := range []string{usbstorage.Class, vendorClass} {
		if w.procs {
			p, err := w.startProc(cls)
			if err != nil {
				return err
			}
			if p != nil {
				w.addMember(p)
			}
		} else {
			w.attachClient(ctx, cls, 0)
		}
		w.attachClient(ctx, cls, 1)
	}
	return nil
}

func (w *world) instance(class string) (*driver.Service, func(), bool) {
	for _, s := range w.reg.Services() {
		if s.Class() == class {
			if x, release, ok := w.reg.Lookup(s.ID()); ok {
				return x, release, true
			}
		}
	}
	return nil, nil, false
}

// unplug pulls the stick: the fake device goes first (in-flight transfers
// fail with no-device), then the kernel's remove uevents reach the bridge.
func (w *world) unplug() {
	w.unplugMu.Lock()
	defer w.unplugMu.Unlock()
	if w.unplugged || w.closing.Load() {
		return
	}
	w.unplugged = true
	w.stick.Unplug()
	frag, err := sim.ParseScenarioFragment("explore", unplugLine)
	if err != nil {
		w.violate("unplug fragment: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.sim.Inject(ctx, frag); err != nil {
		if !errors.Is(err, hotplug.ErrClosed) {
			w.violate("unplug: %v", err)
		}
		return
	}
	n, _ := eventCounts()
	w.waitHandled(n[0] + n[1])
}

// unload unloads a driver; a refusal past the deadline is reported in
// notes (a hanging job may cause it) and must name what blocks.
func (w *world) unload(name string, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := w.reg.Unload(ctx, name)
	if err == nil {
		return
	}
	var he *driver.HasInstancesError
	if !errors.As(err, &he) || len(he.Blockers) == 0 {
		w.violate("unload %s: want a holder report, got %v", name, err)
		return
	}
	w.note("unload %s refused: %s", name, firstLine(err.Error()))
}

// terminateSync terminates the first live instance of class with a
// deadline; past it the BlockedError must say what blocks.
func (w *world) terminateSync(class string, d time.Duration) {
	s, release, ok := w.instance(class)
	if !ok {
		return
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	release() // TerminateSync waits for the free: our reference must go
	err := s.TerminateSync(ctx)
	if err == nil {
		return
	}
	var be *driver.BlockedError
	if !errors.As(err, &be) || !errors.Is(err, driver.ErrBlocked) || len(be.Blockers) == 0 {
		w.violate("terminate %s: want a blocker report, got %v", class, err)
		return
	}
	w.note("terminateSync %s blocked: %s", class, firstLine(err.Error()))
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// --- the vendor test driver ---

func vendorPersonality(w *world) driver.Personality {
	return driver.Personality{
		Name: vendorName, Class: vendorClass, ProviderClass: usbstorage.NubClass, Score: 5,
		Match: []driver.Match{driver.MatchFunc(func(p driver.Properties) bool {
			c, ok := p.Int(usbstorage.PropInterfaceClass)
			return ok && c == 0xff
		})},
		New: func() driver.Driver { return &vendorDriver{w: w} },
	}
}

// vendorDriver checks, from the driver's side, what the contract promises:
// no job runs and no method or callback arrives after Stop, Stop sees no
// running job, every job's Free runs exactly once.
type vendorDriver struct {
	w       *world
	stopped atomic.Bool
	inRun   atomic.Int32
}

var (
	_ driver.Driver         = (*vendorDriver)(nil)
	_ driver.Prober         = (*vendorDriver)(nil)
	_ driver.WillTerminater = (*vendorDriver)(nil)
	_ driver.DidTerminater  = (*vendorDriver)(nil)
	_ driver.ClientMethods  = (*vendorDriver)(nil)
)

func (d *vendorDriver) Probe(ctx context.Context, s *driver.Service) (int, bool) { return 10, true }

func (d *vendorDriver) Start(ctx context.Context, s *driver.Service) error {
	for i := range startJobs {
		// Four wait for cancellation (running at Stop), two stay queued.
		_ = d.submit(s, "", time.Duration(i)*time.Hour)
	}
	return nil
}

func (d *vendorDriver) submit(s *driver.Service, key string, dur time.Duration) error {
	w := d.w
	w.jobsSubmitted.Add(1)
	var freed atomic.Int32
	return s.Submit(driver.Job{Key: key,
		Run: func(ctx context.Context) error {
			if d.stopped.Load() {
				w.violate("%s: job ran after Stop", s)
			}
			d.inRun.Add(1)
			defer d.inRun.Add(-1)
			t := time.NewTimer(dur)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			return nil
		},
		Free: func() {
			if freed.Add(1) != 1 {
				w.violate("%s: job Free ran twice", s)
			}
			w.jobsFreed.Add(1)
		}})
}

func (d *vendorDriver) WillTerminate(s *driver.Service) {
	if d.stopped.Load() {
		d.w.violate("%s: WillTerminate after Stop", s)
	}
}

func (d *vendorDriver) DidTerminate(s *driver.Service) {
	if d.stopped.Load() {
		d.w.violate("%s: DidTerminate after Stop", s)
	}
}

func (d *vendorDriver) Stop(s *driver.Service) {
	if n := d.inRun.Load(); n > 0 {
		d.w.violate("%s: Stop with %d job(s) running", s, n)
	}
	if d.stopped.Swap(true) {
		d.w.violate("%s: Stop twice", s)
	}
}

func (d *vendorDriver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"work": func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			if d.stopped.Load() {
				d.w.violate("%s: method called after Stop", s)
			}
			return in, d.submit(s, "work", 200*time.Microsecond)
		},
	}
}

// --- embedded clients ---

// client is an in-process user client: attached to a driver instance,
// holding it open, calling methods in a loop. kill is its crash (no Close:
// its termination detaches it, which closes its open).
type client struct {
	w      *world
	svc    *driver.Service
	prov   *driver.Service
	cancel context.CancelFunc
	done   chan struct{}
	killed atomic.Bool
}

var _ driver.MessageHandler = (*client)(nil)

func (c *client) Message(s *driver.Service, m driver.Message) error {
	if m.Type == driver.ServiceIsRequestingClose && m.From == c.prov.ID() {
		_ = c.prov.Close(s)
	}
	return nil
}

func (w *world) attachClient(ctx context.Context, class string, i int) {
	prov, release, ok := w.instance(class)
	if !ok {
		return
	}
	defer release()
	c := &client{w: w, prov: prov, done: make(chan struct{})}
	svc, err := w.reg.AttachClient(prov, clientClass, fmt.Sprintf("%s-client%d", class, i), c)
	if err != nil {
		if !errors.Is(err, driver.ErrNotActive) && !errors.Is(err, driver.ErrClosed) {
			w.violate("attach client: %v", err)
		}
		return
	}
	c.svc = svc
	if err := prov.Open(svc, driver.OpenOptions{}); err != nil && !errors.Is(err, driver.ErrNotActive) {
		w.note("open: %v", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	w.addMember(c)
	go c.io(cctx, class)
}

func (c *client) io(ctx context.Context, class string) {
	defer close(c.done)
	method, in := "work", []byte("x")
	if c.prov.Class() == usbstorage.Class {
		method, in = blockdev.MethodRead, blockdev.EncodeRead(1, 1)
	}
	for ctx.Err() == nil {
		_, err := c.prov.Call(ctx, method, in)
		c.w.calls.Add(1)
		if err != nil {
			c.w.callErrs.Add(1)
			if errors.Is(err, driver.ErrNotActive) {
				return
			}
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// kill is the client's crash.
func (c *client) kill() {
	if c.killed.Swap(true) {
		return
	}
	c.cancel()
	c.svc.Terminate()
}

// quit is the client's orderly exit: close, then go.
func (c *client) quit() {
	if c.killed.Swap(true) {
		return
	}
	c.cancel()
	<-c.done
	_ = c.prov.Close(c.svc)
	c.svc.Terminate()
}

// member is an application: an embedded client or a process.
type member interface {
	kill()       // crash
	quit()       // orderly close and exit
	stop()       // end its I/O (a process is killed) and wait for it
	alive() bool // neither killed nor quit
}

var (
	_ member = (*client)(nil)
	_ member = (*procClient)(nil)
)

func (w *world) addMember(m member) {
	w.cmu.Lock()
	w.clients = append(w.clients, m)
	w.cmu.Unlock()
}

func (c *client) stop() {
	c.cancel()
	<-c.done
}

func (c *client) alive() bool { return !c.killed.Load() }

func (w *world) liveClient(i int) member {
	w.cmu.Lock()
	defer w.cmu.Unlock()
	for _, c := range w.clients {
		if c.alive() {
			if i == 0 {
				return c
			}
			i--
		}
	}
	return nil
}

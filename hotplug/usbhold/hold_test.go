package usbhold

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

var (
	stick    = [3]uint8{0x08, 0x06, 0x50}
	keyboard = [3]uint8{0x03, 0x01, 0x01}
)

// storagePersonality matches bulk-only mass storage as usbstorage does.
func storagePersonality(newDriver func() driver.Driver) driver.Personality {
	return driver.Personality{
		Name: "usbstorage", Class: "USBMassStorage", ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{
			driver.MatchValue(usbbus.PropIfaceClass, 0x08),
			driver.MatchValue(usbbus.PropIfaceSub, 0x06),
			driver.MatchValue(usbbus.PropIfaceProto, 0x50),
		},
		New: newDriver,
	}
}

type personalities struct {
	mu sync.Mutex
	ps []driver.Personality
}

func (p *personalities) get() []driver.Personality {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]driver.Personality(nil), p.ps...)
}

func (p *personalities) set(ps ...driver.Personality) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ps = ps
}

func newTestHold(t *testing.T, k *fakeKernel, state string, ps *personalities) (*Hold, Report) {
	t.Helper()
	h, rep, err := newHold(k, Config{State: state, Personalities: ps.get})
	require.NoError(t, err)
	return h, rep
}

func TestHoldKeepsOnlyWhatIsClaimed(t *testing.T) {
	k := newFakeKernel("usb1", "usb2", "usb3")
	k.hubs["usb3"] = false // another policy's (usbguard)
	state := filepath.Join(t.TempDir(), "usb-hold.json")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, rep := newTestHold(t, k, state, ps)
	require.True(t, rep.Empty())
	defer func() { require.NoError(t, h.Close()) }()

	require.NoError(t, h.Sync())
	require.Equal(t, []string{"usb1", "usb2"}, h.Gated())
	require.False(t, k.hubDefault("usb1"))
	require.False(t, k.hubDefault("usb3"), "someone else's gate is left as it was")
	st, err := ReadState(state)
	require.NoError(t, err)
	require.Equal(t, []string{"usb1", "usb2"}, st.Gated, "the gates are on record")

	// A stick a personality claims: no kernel driver at any point; it is
	// authorized only when drvkit's driver claims it through usbfs.
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 0x0001, stick, "usb-storage")
	h.Event(&ev)
	auth, drv := k.state("2-1:1.0")
	require.False(t, auth, "authorized now, the kernel's first probe could still bind it")
	require.Empty(t, drv)
	require.Empty(t, k.binds())
	require.Error(t, k.claim("2-1:1.0"), "the kernel refuses a usbfs claim of an unauthorized interface")
	require.NoError(t, h.Claim(context.Background(), "2-1:1.0"))
	auth, drv = k.state("2-1:1.0")
	require.True(t, auth)
	require.Empty(t, drv)
	require.Equal(t, []Held{{Interface: "2-1:1.0", Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1, Personality: "usbstorage"}}, h.Held())
	st, err = ReadState(state)
	require.NoError(t, err)
	require.Equal(t, h.Held(), st.Held)
	require.NoError(t, k.claim("2-1:1.0"))

	// A keyboard nobody here claims: the kernel's driver binds now.
	ev = k.plug(t, "1-2:1.0", 1, 4, 0x0627, 0x0001, keyboard, "usbhid")
	h.Event(&ev)
	auth, drv = k.state("1-2:1.0")
	require.True(t, auth)
	require.Equal(t, "usbhid", drv)

	// Behind someone else's gate: not ours to decide.
	ev = k.plug(t, "3-1:1.0", 3, 2, 0x46f4, 0x0002, stick, "usb-storage")
	h.Event(&ev)
	auth, drv = k.state("3-1:1.0")
	require.False(t, auth)
	require.Empty(t, drv)

	// The held stick goes: forgotten.
	ev = k.unplug(t, "2-1:1.0")
	h.Event(&ev)
	require.Empty(t, h.Held())
	require.Equal(t, []string{"bind 1-2:1.0 usbhid"}, k.binds())
}

func TestHoldNewRootHubIsGated(t *testing.T) {
	k := newFakeKernel("usb1")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), ps)
	require.NoError(t, h.Sync())
	k.hubs["usb4"] = true // a controller hot-plugged (a dock)
	ev := mustEvent(t, "add", "/devices/pci0000:00/0000:00:05.0/usb4", "DEVTYPE=usb_device", "PRODUCT=1d6b/3/601", "TYPE=9/0/3", "BUSNUM=004", "DEVNUM=001")
	h.Event(&ev)
	require.Equal(t, []string{"usb1", "usb4"}, h.Gated())
	require.False(t, k.hubDefault("usb4"))
	require.NoError(t, h.Close())
	require.True(t, k.hubDefault("usb1"))
	require.True(t, k.hubDefault("usb4"))
}

func TestSyncLiftsWhenNoPersonalityHolds(t *testing.T) {
	k := newFakeKernel("usb2")
	state := filepath.Join(t.TempDir(), "s.json")
	ps := &personalities{}
	h, _ := newTestHold(t, k, state, ps)
	defer h.Close()
	require.NoError(t, h.Sync())
	require.Empty(t, h.Gated(), "no USB personality: no gate")
	require.True(t, k.hubDefault("usb2"))
	_, err := os.Stat(state)
	require.ErrorIs(t, err, os.ErrNotExist)

	ps.set(storagePersonality(nil))
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	require.Len(t, h.Held(), 1)

	// usbstorage unloaded (its instance stopped, the claim released):
	// the gate goes and the stick is given back.
	ps.set()
	require.NoError(t, h.Sync())
	require.True(t, k.hubDefault("usb2"))
	_, drv := k.state("2-1:1.0")
	require.Equal(t, "usb-storage", drv)
	require.Empty(t, h.Held())
	_, err = os.Stat(state)
	require.ErrorIs(t, err, os.ErrNotExist, "nothing changed, nothing on record")
}

// A daemon killed with gates set and an interface held: the next one
// lifts the gates, gives the kernel what was created meanwhile and the
// held interface the dead daemon's claim left driverless, and not what
// another device now on the same port is.
func TestRecoverAfterCrash(t *testing.T) {
	k := newFakeKernel("usb1", "usb2")
	state := filepath.Join(t.TempDir(), "s.json")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, state, ps)
	require.NoError(t, h.Sync())
	for _, p := range []struct {
		name string
		bus  int
		addr int
	}{{"2-1:1.0", 2, 3}, {"2-2:1.0", 2, 5}} {
		ev := k.plug(t, p.name, p.bus, p.addr, 0x46f4, 1, stick, "usb-storage")
		h.Event(&ev)
		require.NoError(t, h.Claim(context.Background(), p.name))
		require.NoError(t, k.claim(p.name))
	}
	// SIGKILL: no Close. The kernel drops the dead process's claims and
	// binds nothing; 2-2 is replugged as another device meanwhile, and a
	// keyboard arrives behind the gate with no daemon to decide.
	k.release("2-1:1.0")
	k.release("2-2:1.0")
	k.unplug(t, "2-2:1.0")
	k.plug(t, "2-2:1.0", 2, 9, 0x1234, 0x5678, stick, "usb-storage")
	k.plug(t, "1-3:1.0", 1, 2, 0x0627, 1, keyboard, "usbhid")
	require.Empty(t, k.binds())

	h2, rep := newTestHold(t, k, state, ps)
	defer h2.Close()
	require.ElementsMatch(t, []string{"usb1", "usb2"}, rep.Ungated)
	require.Equal(t, []string{"1-3:1.0", "2-2:1.0"}, rep.Authorized, "created behind the gate with no daemon to decide")
	require.Equal(t, []string{"2-1:1.0"}, rep.GivenBack, "the held interface the dead claim left driverless")
	require.True(t, k.hubDefault("usb1"))
	require.True(t, k.hubDefault("usb2"))
	require.ElementsMatch(t, []string{"bind 1-3:1.0 usbhid", "bind 2-1:1.0 usb-storage", "bind 2-2:1.0 usb-storage"}, k.binds())
	_, err := os.Stat(state)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Empty(t, h2.Held())
}

// A held name now on another device, bound by the kernel (the gate was
// lifted before it came): recovery leaves it alone.
func TestRecoverLeavesAnotherDeviceOnHeldName(t *testing.T) {
	k := newFakeKernel("usb2")
	state := filepath.Join(t.TempDir(), "s.json")
	require.NoError(t, writeState(state, State{Gated: []string{"usb2"}, Held: []Held{{Interface: "2-2:1.0", Bus: 2, Address: 5, Vendor: 0x46f4, Product: 1}}}))
	k.plug(t, "2-2:1.0", 2, 9, 0x1234, 0x5678, stick, "usb-storage")
	k.mu.Lock()
	k.ifaces["2-2:1.0"].driver = "" // its owner unbound it by hand
	k.mu.Unlock()
	k.hubs["usb2"] = false
	rep, err := recoverState(k, state)
	require.NoError(t, err)
	require.Equal(t, []string{"usb2"}, rep.Ungated)
	require.Empty(t, rep.GivenBack, "a held name is checked by identity, and this is another device")
	_, drv := k.state("2-2:1.0")
	require.Empty(t, drv)
}

func TestRecoverBadStateKeepsFile(t *testing.T) {
	k := newFakeKernel("usb1")
	state := filepath.Join(t.TempDir(), "s.json")
	require.NoError(t, os.WriteFile(state, []byte(`{"version":1,"gated":["../../bus/usb/drivers/x"]}`), 0o600))
	_, err := recoverState(k, state)
	require.ErrorIs(t, err, ErrState)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "recover", oe.Op)
	_, err = os.Stat(state)
	require.NoError(t, err, "a state that was not undone stays")
	require.Empty(t, k.log, "nothing of a bad state is acted on")
}

// drv is a driver whose Start claims through the fake kernel's usbfs or
// fails, and whose Stop releases.
type drv struct {
	k     *fakeKernel
	h     **Hold
	fail  bool
	iface string
}

func (d *drv) Start(ctx context.Context, s *driver.Service) error {
	if d.fail {
		return errors.New("device refuses bulk-only")
	}
	d.iface = s.Providers()[0].Name()
	if err := (*d.h).Claim(ctx, d.iface); err != nil {
		return err
	}
	return d.k.claim(d.iface)
}

func (d *drv) Stop(*driver.Service) { d.k.release(d.iface) }

// Watch gives an interface back when its driver lets go: after unload,
// and after every candidate failed to start.
func TestWatchGivesBack(t *testing.T) {
	defer leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		fail bool
	}{{"unload", false}, {"start-fails", true}} {
		t.Run(tc.name, func(t *testing.T) {
			k := newFakeKernel("usb2")
			r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
			rec := lifecycletest.Record(t, r)
			var h *Hold
			p := storagePersonality(func() driver.Driver { return &drv{k: k, h: &h, fail: tc.fail} })
			require.NoError(t, r.RegisterPersonality(p))
			h, _ = newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), &personalities{ps: r.AllPersonalities()})
			require.NoError(t, h.Watch(r))
			require.Error(t, h.Watch(r), "one watch per hold")
			require.NoError(t, h.Sync())

			ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
			h.Event(&ev)
			props, err := InterfaceProperties(&ev)
			require.NoError(t, err)
			nub := r.NewNub(usbbus.ClassInterface, "2-1:1.0", props)
			require.NoError(t, r.Publish(nil, nub))
			if !tc.fail {
				_, d := k.state("2-1:1.0")
				require.Equal(t, "usbfs", d, "drvkit's driver claimed the held interface")
				require.Len(t, h.Held(), 1)
				require.NoError(t, r.Unload(ctx, "usbstorage"))
			}
			require.Eventually(t, func() bool { _, d := k.state("2-1:1.0"); return d == "usb-storage" }, 5*time.Second, time.Millisecond,
				"the kernel's driver gets the interface back")
			require.Empty(t, h.Held())
			require.Equal(t, []string{"bind 2-1:1.0 usb-storage"}, k.binds(), "bound once, at the give-back")

			require.NoError(t, h.Close())
			require.True(t, k.hubDefault("usb2"))
			require.NoError(t, nub.TerminateSync(ctx))
			require.NoError(t, r.Close(ctx))
			require.NoError(t, lifecycletest.Validate(rec.Events(), true))
		})
	}
}

func mustEvent(t *testing.T, action, devpath string, env ...string) hotplug.Event {
	t.Helper()
	a, ok := hotplug.ParseAction(action)
	require.True(t, ok)
	ev, err := hotplug.NewEvent(a, devpath, "usb", 0, env...)
	require.NoError(t, err)
	return ev
}

// The kernel sends an interface's add uevent before it probes it: a claim
// waits until the device is configured (its generic driver bound), so the
// authorization cannot let that first probe bind the kernel's driver.
func TestClaimWaitsForConfiguration(t *testing.T) {
	k := newFakeKernel("usb2")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), ps)
	defer h.Close()
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	k.mu.Lock()
	k.devices["2-1"] = "" // still in usb_set_configuration
	k.mu.Unlock()
	h.Event(&ev)
	done := make(chan error, 1)
	go func() { done <- h.Claim(context.Background(), "2-1:1.0") }()
	select {
	case err := <-done:
		t.Fatalf("claimed before the device was configured: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	auth, _ := k.state("2-1:1.0")
	require.False(t, auth)
	k.mu.Lock()
	k.devices["2-1"] = "usb"
	k.mu.Unlock()
	require.NoError(t, <-done)
	auth, drv := k.state("2-1:1.0")
	require.True(t, auth)
	require.Empty(t, drv)

	// Never configured: the claim gives up with the context.
	ev = k.plug(t, "2-2:1.0", 2, 4, 0x46f4, 1, stick, "usb-storage")
	k.mu.Lock()
	k.devices["2-2"] = ""
	k.mu.Unlock()
	h.Event(&ev)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := h.Claim(ctx, "2-2:1.0")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "claim 2-2:1.0: device 2-2 not configured")

	// Unplugged while the claim waits: the claim itself will say so.
	go func() {
		time.Sleep(20 * time.Millisecond)
		k.mu.Lock()
		delete(k.ifaces, "2-2:1.0")
		delete(k.devices, "2-2")
		k.mu.Unlock()
	}()
	require.NoError(t, h.Claim(context.Background(), "2-2:1.0"))

	// Not held: nothing to do.
	require.NoError(t, h.Claim(context.Background(), "2-9:1.0"))
}

// An interface that vanishes between the configuration check and the
// authorization is left to the claim, which says ErrNoDevice: the hold
// does not turn an unplug into a transport error (seen on a real kernel,
// TestDrvctlUSBGoneBeforeStart).
func TestClaimUnpluggedAtAuthorize(t *testing.T) {
	k := newFakeKernel("usb2")
	ps := &personalities{}
	ps.set(storagePersonality(nil))
	h, _ := newTestHold(t, k, filepath.Join(t.TempDir(), "s.json"), ps)
	defer h.Close()
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	k.mu.Lock()
	k.authErr = &os.PathError{Op: "open", Path: "/sys/bus/usb/devices/2-1:1.0/authorized", Err: os.ErrNotExist}
	k.mu.Unlock()
	require.NoError(t, h.Claim(context.Background(), "2-1:1.0"))
}

// A driver that crashed is relaunched after a backoff (Config.Relaunching,
// the out-of-process host's): meanwhile the interface stays held — the
// kernel's driver does not get it, to be detached again a moment later —
// and once the relaunched driver claims it, it stays drvkit's. A relaunch
// given up (the driver disabled) gives it back.
func TestWatchKeepsWhileRelaunching(t *testing.T) {
	defer leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := newFakeKernel("usb2")
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, r)
	var h *Hold
	require.NoError(t, r.RegisterPersonality(storagePersonality(func() driver.Driver { return &drv{k: k, h: &h} })))
	var relaunching atomic.Bool
	var asked atomic.Int32
	h, _, err := newHold(k, Config{State: filepath.Join(t.TempDir(), "s.json"), Personalities: r.AllPersonalities,
		Relaunching: func(nub *driver.Service) bool {
			require.Equal(t, "2-1:1.0", nub.Name())
			asked.Add(1)
			return relaunching.Load()
		}})
	require.NoError(t, err)
	require.NoError(t, h.Watch(r))
	require.NoError(t, h.Sync())
	ev := k.plug(t, "2-1:1.0", 2, 3, 0x46f4, 1, stick, "usb-storage")
	h.Event(&ev)
	props, err := InterfaceProperties(&ev)
	require.NoError(t, err)
	nub := r.NewNub(usbbus.ClassInterface, "2-1:1.0", props)
	require.NoError(t, r.Publish(nil, nub))
	drvState := func() string { _, d := k.state("2-1:1.0"); return d }
	require.Equal(t, "usbfs", drvState())

	crash := func() {
		t.Helper()
		for _, c := range nub.Clients() {
			if c.Personality() != nil {
				require.NoError(t, c.TerminateSyncWith(ctx, driver.CauseCrashed))
			}
		}
	}
	// Crashed, to be relaunched: held through several looks.
	relaunching.Store(true)
	crash()
	require.Eventually(t, func() bool { return asked.Load() >= 3 }, 5*time.Second, time.Millisecond)
	require.Empty(t, drvState(), "released by the crashed driver, not given to the kernel")
	require.Len(t, h.Held(), 1)
	// Relaunched: the new instance claims it; the relaunch is over.
	r.Rematch(nub)
	require.Equal(t, "usbfs", drvState())
	relaunching.Store(false)
	time.Sleep(5 * relaunchPoll)
	require.Equal(t, "usbfs", drvState(), "drvkit's again, not given back")
	require.Len(t, h.Held(), 1)

	// Crashed again, and the relaunch given up: given back.
	relaunching.Store(true)
	crash()
	time.Sleep(3 * relaunchPoll)
	require.Empty(t, drvState())
	relaunching.Store(false)
	require.Eventually(t, func() bool { return drvState() == "usb-storage" }, 5*time.Second, time.Millisecond)
	require.Empty(t, h.Held())
	require.Equal(t, []string{"bind 2-1:1.0 usb-storage"}, k.binds(), "bound once, at the give-back")

	require.NoError(t, h.Close())
	require.NoError(t, nub.TerminateSync(ctx))
	require.NoError(t, r.Close(ctx))
	require.NoError(t, lifecycletest.Validate(rec.Events(), true))
}

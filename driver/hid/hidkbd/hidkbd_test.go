package hidkbd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

// rig is a simulated machine with the bridge and hidkbd on hidsim: the
// simulator's hidraw nodes become hidsim devices before the bridge sees
// their events (as `drvctl serve --sim` wires them), and its input reports
// reach them.
type rig struct {
	reg    *driver.Registry
	rec    *lifecycletest.Recorder
	sim    *sim.Sim
	hid    *hidsim.Backend
	bridge *hotplug.Bridge
	dir    string
	ran    chan error
	stop   context.CancelFunc
}

// follow applies hidraw events to the fake backend, then hands them on.
type follow struct {
	hotplug.Source
	r *rig
}

func (f follow) Next(ctx context.Context) (hotplug.Event, error) {
	ev, err := f.Source.Next(ctx)
	if err != nil || ev.Subsystem != "hid" && ev.Subsystem != "hidraw" {
		return ev, err
	}
	switch {
	case ev.Action == hotplug.ActionAdd && ev.Subsystem == "hid":
		_, err = f.r.hid.PlugSysfs(f.r.dir, ev.DevPath)
	case ev.Action == hotplug.ActionAdd:
		_, err = f.r.hid.PlugSysfs(f.r.dir, path.Dir(path.Dir(ev.DevPath)))
	case ev.Action == hotplug.ActionRemove && ev.Subsystem == "hidraw":
		f.r.hid.Device("/dev/" + ev.Name()).Unplug()
	}
	return ev, err
}

func newRig(t *testing.T, ctx context.Context) *rig {
	r := &rig{reg: driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler))), hid: hidsim.New(), dir: t.TempDir(), ran: make(chan error, 1)}
	r.rec = lifecycletest.Record(t, r.reg)
	require.NoError(t, r.reg.RegisterPersonality(hidkbd.Personality(r.hid)))
	sc, err := sim.ParseScenarioString("boot", "")
	require.NoError(t, err)
	r.sim, err = sim.New(sc, sim.Config{SysfsDir: r.dir, Live: true, Reports: func(rep sim.Report) {
		if d := r.hid.Device(rep.Node); d != nil {
			d.Input(rep.Data)
		}
	}})
	require.NoError(t, err)
	r.bridge = hotplug.NewBridge(r.reg, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: r.dir})
	runCtx, stop := context.WithCancel(ctx)
	r.stop = stop
	go func() { r.ran <- r.bridge.Run(runCtx, follow{r.sim, r}) }()
	return r
}

// do injects steps and waits until the registry followed them.
func (r *rig) do(t *testing.T, ctx context.Context, steps string) {
	t.Helper()
	frag, err := sim.ParseScenarioFragment("test", steps)
	require.NoError(t, err)
	require.NoError(t, r.sim.Inject(ctx, frag))
	require.NoError(t, r.bridge.Flush(ctx))
	require.NoError(t, r.reg.WaitQuiet(ctx))
}

func (r *rig) close(t *testing.T, ctx context.Context) {
	r.stop()
	require.ErrorIs(t, <-r.ran, context.Canceled)
	require.NoError(t, r.bridge.Close())
	require.NoError(t, r.sim.Close())
	require.NoError(t, r.reg.Close(ctx))
	r.rec.Check(t)
}

func (r *rig) find(class string) *driver.Service {
	for _, s := range r.reg.Services() {
		if s.Class() == class && s.State().Active {
			return s
		}
	}
	return nil
}

// TestKeyboardEndToEnd plugs a simulated USB keyboard, checks the nubs the
// HID adapter published, types on it through the simulator and reads what
// hidkbd decoded, then unplugs it while a read waits: the read fails with
// ErrNoDevice, and every service goes terminate → stop → detach → free.
func TestKeyboardEndToEnd(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(t, ctx)
	r.do(t, ctx, `plug usb 2-1 vid=046d pid=c31c manufacturer=Logitech product="USB Keyboard" serial=K1 ifaces=03/01/01 hid=keyboard`)

	nub := r.find(hidbus.ClassDevice)
	require.NotNil(t, nub, "no HIDDevice nub")
	p := nub.Properties()
	for k, want := range map[string]any{
		hidbus.PropBus: uint64(hid.BusUSB), hidbus.PropVendorID: uint64(0x046d), hidbus.PropProductID: uint64(0xc31c),
		hidbus.PropHidraw: "/dev/hidraw0", hidbus.PropName: "Logitech USB Keyboard", hidbus.PropUniq: "K1",
		hidbus.PropPhys: "usb-0000:00:02.0-1/input0", hidbus.PropDescriptorSize: uint64(len(hid.BootKeyboard)),
		hidbus.PropUsagePage: uint64(1), hidbus.PropUsage: uint64(6),
	} {
		v, ok := p.Get(k)
		require.True(t, ok, k)
		require.Equal(t, want, v, k)
	}
	require.Equal(t, "0003:046D:C31C.0001", nub.Name())
	iface := nub.Providers()[0]
	require.Equal(t, usbbus.ClassInterface, iface.Class())
	cls, _ := iface.Properties().Uint(usbbus.PropIfaceClass)
	require.Equal(t, uint64(3), cls)

	kbd := r.find(hidkbd.Class)
	require.NotNil(t, kbd, "hidkbd did not start")
	require.Equal(t, nub, kbd.Providers()[0])

	r.do(t, ctx, `hid type 2-1 text="Hi 42"`)
	require.Eventually(t, func() bool {
		out, err := kbd.Call(ctx, hidkbd.MethodKeys, nil)
		require.NoError(t, err)
		var k hidkbd.KeysReply
		require.NoError(t, json.Unmarshal(out, &k))
		return k.Text == "Hi 42"
	}, 10*time.Second, 5*time.Millisecond)
	// A client reading with the seq it got sees every report, in order.
	var got []string
	var rd hidkbd.ReadReply
	for after := 0; after < 10; after++ {
		out, err := kbd.Call(ctx, hidkbd.MethodRead, []byte(fmt.Sprintf(`{"after":%d}`, after)))
		require.NoError(t, err)
		rd = hidkbd.ReadReply{}
		require.NoError(t, json.Unmarshal(out, &rd))
		require.Equal(t, uint64(after+1), rd.Seq)
		got = append(got, fmt.Sprintf("%s %v", rd.Report, rd.Pressed))
	}
	require.Equal(t, []string{
		"02000b0000000000 [11]", "0000000000000000 []", // H
		"00000c0000000000 [12]", "0000000000000000 []", // i
		"00002c0000000000 [44]", "0000000000000000 []", // space
		"0000210000000000 [33]", "0000000000000000 []", // 4
		"00001f0000000000 [31]", "0000000000000000 []", // 2
	}, got, "five characters, a press and a release each")

	// LEDs go out as an output report.
	_, err := kbd.Call(ctx, hidkbd.MethodLEDs, []byte(`{"leds":2}`))
	require.NoError(t, err)
	require.Equal(t, [][]byte{{0, 2}}, r.hid.Device("/dev/hidraw0").Outputs(), "report ID 0, then the LED bits")

	// A read waiting for the next report when the keyboard is unplugged.
	readErr := make(chan error, 1)
	go func() {
		_, err := kbd.Call(ctx, hidkbd.MethodRead, []byte(`{"after":10}`))
		readErr <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it wait (it fails the same if it has not)
	r.do(t, ctx, "unplug 2-1")
	require.ErrorIs(t, <-readErr, driver.ErrNoDevice)
	require.Nil(t, r.find(hidbus.ClassDevice))

	// Terminate, stop and detach run in the contract's order; a free
	// comes when the last reference goes — the failed read's goroutine
	// may let go of hidkbd after the nub's free — so the frees are
	// checked for presence (the trace checker, at close, checks each
	// comes after its own service's detach).
	require.NoError(t, r.reg.WaitQuiet(ctx))
	var steps, frees []string
	for _, l := range r.rec.Steps(driver.StepTerminate, driver.StepStop, driver.StepDetach, driver.StepFree) {
		if !strings.Contains(l, "0003:046D") && !strings.HasSuffix(l, " hidkbd") {
			continue
		}
		if strings.HasPrefix(l, "free ") {
			frees = append(frees, l)
		} else {
			steps = append(steps, l)
		}
	}
	require.Equal(t, []string{
		"terminate 0003:046D:C31C.0001", "terminate hidkbd",
		"stop hidkbd", "detach hidkbd<-0003:046D:C31C.0001",
		"stop 0003:046D:C31C.0001", "detach 0003:046D:C31C.0001<-2-1:1.0",
	}, steps)
	require.ElementsMatch(t, []string{"free hidkbd", "free 0003:046D:C31C.0001"}, frees)
	r.close(t, ctx)
}

// TestReadFallenBehind: a client that did not read for longer than the
// driver keeps reports gets the oldest one kept, and its seq says how many
// it missed; reading on from there loses nothing more.
func TestReadFallenBehind(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newRig(t, ctx)
	r.do(t, ctx, `plug usb 2-1 vid=046d pid=c31c ifaces=03/01/01 hid=keyboard`)
	kbd := r.find(hidkbd.Class)
	require.NotNil(t, kbd)
	read := func(after uint64) hidkbd.ReadReply {
		t.Helper()
		out, err := kbd.Call(ctx, hidkbd.MethodRead, []byte(fmt.Sprintf(`{"after":%d}`, after)))
		require.NoError(t, err)
		var rd hidkbd.ReadReply
		require.NoError(t, json.Unmarshal(out, &rd))
		return rd
	}
	// Two bursts (hidraw's own queue holds 64 reports, as the kernel's):
	// 32 reports, then 40.
	r.do(t, ctx, `hid type 2-1 text=`+strings.Repeat("abcd", 4))
	require.Equal(t, uint64(32), read(31).Seq, "waits for the 32nd report")
	r.do(t, ctx, `hid type 2-1 text=`+strings.Repeat("abcd", 5))
	require.Equal(t, uint64(72), read(71).Seq)
	rd := read(0)
	require.Equal(t, uint64(72-64+1), rd.Seq, "the oldest of the 64 kept")
	require.Equal(t, "0000040000000000", rd.Report, "report 9: the press of the fifth key, a")
	require.Equal(t, []int{4}, rd.Pressed)
	for seq := rd.Seq; seq < 72; seq++ {
		require.Equal(t, seq+1, read(seq).Seq)
	}
	// Bad arguments are refused, and the driver goes on.
	_, err := kbd.Call(ctx, hidkbd.MethodRead, []byte(`{"after":-1}`))
	require.ErrorContains(t, err, "bad arguments")
	require.Equal(t, uint64(72), read(71).Seq)
	r.do(t, ctx, "unplug 2-1")
	r.close(t, ctx)
}

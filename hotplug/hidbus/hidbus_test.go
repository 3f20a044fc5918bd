package hidbus_test

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/hotplug/hotplugtest"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

const hidPath = "/devices/pci0000:00/0000:00:02.0/usb1/1-1/1-1:1.0/0003:046D:C31C.0001"

func TestParseID(t *testing.T) {
	id, err := hidbus.ParseID("0003:0000046D:0000C31C")
	require.NoError(t, err)
	require.Equal(t, hidbus.ID{Bus: 3, Vendor: 0x46d, Product: 0xc31c}, id)
	require.Equal(t, "0003:0000046D:0000C31C", id.String())
	for _, bad := range []string{"", "0003:046D:C31C", "0003:0000046D", "000g:0000046D:0000C31C", "0003:+000046D:0000C31C",
		"0003:0000046D:0000C31C:0", "00003:000046D:0000C31C"} {
		_, err := hidbus.ParseID(bad)
		require.ErrorIs(t, err, hotplug.ErrMalformed, bad)
		require.ErrorContains(t, err, "(HID_ID)", bad)
	}
}

// FuzzParseID: a value either parses and prints back as itself (the
// kernel's format is canonical up to case), or is ErrMalformed.
func FuzzParseID(f *testing.F) {
	f.Add("0003:0000046D:0000C31C")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := hidbus.ParseID(s)
		if err != nil {
			if !errors.Is(err, hotplug.ErrMalformed) {
				t.Fatalf("error %v does not match ErrMalformed", err)
			}
			return
		}
		if again, err := hidbus.ParseID(id.String()); err != nil || again != id {
			t.Fatalf("%q → %v does not round-trip", s, id)
		}
	})
}

func TestMatch(t *testing.T) {
	b := hidbus.New()
	ev := func(sub, path string, env ...string) *hotplug.Event {
		e, err := hotplug.NewEvent(hotplug.ActionAdd, path, sub, 0, env...)
		require.NoError(t, err)
		return &e
	}
	require.Equal(t, hotplug.Role{Nub: true}, b.Match(ev("hid", hidPath)))
	require.Equal(t, hotplug.Role{Owner: hidPath}, b.Match(ev("hidraw", hidPath+"/hidraw/hidraw0", "DEVNAME=hidraw0")))
	require.Equal(t, hotplug.Role{}, b.Match(ev("hidraw", "/devices/virtual/misc/hidraw0")))
	require.Equal(t, hotplug.Role{}, b.Match(ev("input", hidPath+"/input/input3")))

	// Without hidraw in sysfs or a companion, it waits; the bind ends the
	// wait with what there is.
	add := ev("hid", hidPath, "HID_ID=0003:0000046D:0000C31C", "HID_NAME=K", "HID_PHYS=p", "HID_UNIQ=")
	_, err := b.Describe(&hotplug.DeviceInfo{Event: *add, SysfsRoot: t.TempDir()})
	require.ErrorIs(t, err, hotplug.ErrIncomplete)
	nub, err := b.Describe(&hotplug.DeviceInfo{Event: *add, SysfsRoot: t.TempDir(), Final: true})
	require.NoError(t, err)
	require.Equal(t, hidbus.ClassDevice, nub.Class)
	require.NotContains(t, nub.Properties, hidbus.PropHidraw)
	require.NotContains(t, nub.Properties, hidbus.PropUniq)
	nub, err = b.Describe(&hotplug.DeviceInfo{Event: *add, Companions: []hotplug.Event{*ev("hidraw", hidPath+"/hidraw/hidraw3", "DEVNAME=hidraw3")}})
	require.NoError(t, err)
	require.Equal(t, "/dev/hidraw3", nub.Properties[hidbus.PropHidraw])

	bad := ev("hid", hidPath, "HID_ID=junk")
	_, err = b.Describe(&hotplug.DeviceInfo{Event: *bad, Final: true})
	require.ErrorIs(t, err, hotplug.ErrMalformed)
}

// keyboardSysfs builds the fake sysfs of testdata/keyboard-sysfs.txt and
// writes the keyboard's report descriptor into it.
func keyboardSysfs(t *testing.T) string {
	root := hotplugtest.QEMUSysfs(t, "testdata/keyboard-sysfs.txt")
	require.NoError(t, os.WriteFile(filepath.Join(root, hidPath, "report_descriptor"), hid.BootKeyboard, 0o444))
	return root
}

func newRegistry(t *testing.T) (*driver.Registry, *lifecycletest.Recorder) {
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	return r, lifecycletest.Record(t, r)
}

func find(r *driver.Registry, class string) *driver.Service {
	for _, s := range r.Services() {
		if s.Class() == class && s.State().Active {
			return s
		}
	}
	return nil
}

// TestColdplugFindsKeyboard: a keyboard present at start is published
// from the coldplug walk alone, with every property, under its interface.
func TestColdplugFindsKeyboard(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := keyboardSysfs(t)
	r, rec := newRegistry(t)
	cp, err := hotplug.NewColdplug(root, buses.Classes())
	require.NoError(t, err)
	defer cp.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: root})
	require.NoError(t, b.Run(ctx, cp))
	require.NoError(t, b.Flush(ctx))

	nub := find(r, hidbus.ClassDevice)
	require.NotNil(t, nub)
	require.Equal(t, map[string]any{
		hotplug.PropDevPath: hidPath, hidbus.PropBus: uint64(3), hidbus.PropVendorID: uint64(0x46d), hidbus.PropProductID: uint64(0xc31c),
		hidbus.PropName: "Logitech USB Keyboard", hidbus.PropPhys: "usb-0000:00:02.0-1/input0", hidbus.PropHidraw: "/dev/hidraw0",
		hidbus.PropDescriptorSize: uint64(63), hidbus.PropUsagePage: uint64(1), hidbus.PropUsage: uint64(6),
	}, nub.Properties().Map())
	require.Equal(t, usbbus.ClassInterface, nub.Providers()[0].Class())
	require.Zero(t, b.Stats().PublishErrors)

	require.NoError(t, b.Close())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

// TestResyncRecoversMissedHIDRemove: the keyboard's removes are lost (as
// with ENOBUFS); the resync walk of sysfs gives them back, and the bridge
// terminates the HID nub (and its interface's and device's).
func TestResyncRecoversMissedHIDRemove(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root := keyboardSysfs(t)
	r, rec := newRegistry(t)
	tr := hotplug.NewTracker(root, buses.Classes())
	adds, err := tr.Walk(hotplug.OriginColdplug)
	require.NoError(t, err)
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: root})
	for _, ev := range adds {
		b.Handle(ev)
	}
	require.NoError(t, b.Flush(ctx))
	nub := find(r, hidbus.ClassDevice)
	require.NotNil(t, nub)

	// Unplugged while the socket overflowed: sysfs no longer has it.
	for _, l := range []string{"bus/usb/devices/1-1", "bus/usb/devices/1-1:1.0", "bus/hid/devices/0003:046D:C31C.0001", "class/hidraw/hidraw0"} {
		require.NoError(t, os.Remove(filepath.Join(root, l)))
	}
	fix, err := tr.Resync()
	require.NoError(t, err)
	var got []string
	for _, ev := range fix {
		got = append(got, ev.Action.String()+" "+ev.Subsystem+" "+ev.Name())
		b.Handle(ev)
	}
	require.Equal(t, []string{"remove hidraw hidraw0", "remove hid 0003:046D:C31C.0001", "remove usb 1-1:1.0", "remove usb 1-1"}, got)
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))
	require.Nil(t, find(r, hidbus.ClassDevice))
	select {
	case <-nub.Done():
	case <-ctx.Done():
		t.Fatal("the HID nub was not freed")
	}
	require.Zero(t, b.Stats().UnknownRemoves)
	require.NoError(t, b.Close())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

// TestRealKeyboardUevents feeds the bridge the kernel's uevents of QEMU's
// usb-kbd plugged and unplugged in the e2e guest (testdata/qemu-usb-kbd.*,
// recorded by e2e's TestHIDKeyboard), with the guest's LED, wakeup and
// input events among them: one HIDDevice nub under the keyboard's
// interface, with what the uevents say, and everything freed at the end.
func TestRealKeyboardUevents(t *testing.T) {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := os.ReadFile("testdata/qemu-usb-kbd.b64")
	require.NoError(t, err)
	var evs []hotplug.Event
	for _, l := range strings.Fields(string(raw)) {
		b, err := base64.StdEncoding.DecodeString(l)
		require.NoError(t, err)
		ev, err := hotplug.Parse(b)
		require.NoError(t, err)
		evs = append(evs, ev)
	}
	unplug := slices.IndexFunc(evs, func(ev hotplug.Event) bool { return ev.Action == hotplug.ActionRemove })
	require.Positive(t, unplug)

	r, rec := newRegistry(t)
	// An empty sysfs: the keyboard is gone from the machine that sent
	// these, so the nub has what the uevents carry and no descriptor.
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
	for _, ev := range evs[:unplug] {
		b.Handle(ev)
	}
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))
	nub := find(r, hidbus.ClassDevice)
	require.NotNil(t, nub)
	const dev = "/devices/pci0000:00/0000:00:02.0/usb1/1-2/1-2:1.0/0003:0627:0001.0001"
	require.Equal(t, map[string]any{
		hotplug.PropDevPath: dev, hidbus.PropBus: uint64(hid.BusUSB), hidbus.PropVendorID: uint64(0x627), hidbus.PropProductID: uint64(1),
		hidbus.PropName: "QEMU QEMU USB Keyboard", hidbus.PropPhys: "usb-0000:00:02.0-2/input0", hidbus.PropUniq: "68284-0000:00:02.0-2",
		hidbus.PropHidraw: "/dev/hidraw0",
	}, nub.Properties().Map())
	require.Equal(t, "0003:0627:0001.0001", nub.Name())
	iface := nub.Providers()[0]
	require.Equal(t, usbbus.ClassInterface, iface.Class())
	require.Equal(t, "1-2:1.0", iface.Name())

	for _, ev := range evs[unplug:] {
		b.Handle(ev)
	}
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, r.WaitQuiet(ctx))
	select {
	case <-nub.Done():
	case <-ctx.Done():
		t.Fatal("the HID nub was not freed")
	}
	require.Nil(t, find(r, hidbus.ClassDevice))
	st := b.Stats()
	require.Equal(t, uint64(3), st.Published, "USBDevice, USBInterface, HIDDevice")
	require.Equal(t, uint64(3), st.Terminated)
	require.Zero(t, st.UnknownRemoves)
	require.Zero(t, st.PublishErrors)
	require.NoError(t, b.Close())
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
}

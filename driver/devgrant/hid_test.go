//go:build linux

package devgrant_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// hidRig is a daemon with a simulated keyboard at /dev/hidraw0 granted to a
// driver, and the driver's view of it.
type hidRig struct {
	sim  *hidsim.Backend
	fake *hidsim.Device
	g    *devgrant.Grant
	back hid.Backend // the driver's resource
}

func newHIDRig(t testing.TB) *hidRig {
	sim := hidsim.New()
	fake := sim.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 0x0627, Product: 0x0001}})
	res := drivertable.NewResources()
	drivertable.Provide(res, hidkbd.BackendKey, func() (hid.Backend, error) { return sim, nil })
	r := newRegistry(t)
	nub := publish(t, r, devgrant.HIDProviderClass, "hid0", map[string]any{hidbus.PropHidraw: "/dev/hidraw0"})
	g := grant(t, res, nub)
	require.Len(t, g.Files, 1)
	require.Equal(t, devgrant.File{Resource: "hidraw", Node: "/dev/hidraw0", Kind: devgrant.KindHIDSocket, File: g.Files[0].File}, g.Files[0])
	back, err := hidkbd.BackendKey.From(devgrant.Resources(g.Files))
	require.NoError(t, err)
	return &hidRig{sim: sim, fake: fake, g: g, back: back}
}

func TestHIDOverSocket(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)

	info, err := dev.Info()
	require.NoError(t, err)
	require.Equal(t, hid.Info{Bus: hid.BusUSB, Vendor: 0x0627, Product: 0x0001}, info)
	desc, err := dev.ReportDescriptor()
	require.NoError(t, err)
	require.Equal(t, hid.BootKeyboard, desc)

	// Device → driver: a report waiting, then one sent while the driver
	// reads.
	report := []byte{0, 0, 0x04, 0, 0, 0, 0, 0}
	require.True(t, rig.fake.Input(report))
	buf := make([]byte, 64)
	n, err := dev.ReadInput(context.Background(), buf)
	require.NoError(t, err)
	require.Equal(t, report, buf[:n])
	go func() {
		time.Sleep(20 * time.Millisecond)
		rig.fake.Input([]byte{0, 0, 0x05, 0, 0, 0, 0, 0})
	}()
	n, err = dev.ReadInput(context.Background(), buf)
	require.NoError(t, err)
	require.Equal(t, []byte{0, 0, 0x05, 0, 0, 0, 0, 0}, buf[:n])

	// Driver → device: output and feature reports.
	require.NoError(t, dev.WriteOutput([]byte{0, 0x02}))
	require.Equal(t, [][]byte{{0, 0x02}}, rig.fake.Outputs())
	err = dev.WriteOutput([]byte{0, 1, 2, 3})
	require.ErrorIs(t, err, hid.ErrReportSize, "the daemon's device refuses a wrong size, typed")
	require.ErrorIs(t, dev.WriteOutput([]byte{1}), hid.ErrReportSize)
	_, err = dev.GetFeature(3, make([]byte, 8))
	require.Error(t, err, "no feature report 3")

	// A read ended by its context is the context's error, bare.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err = dev.ReadInput(ctx, buf)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Another node is not granted.
	_, err = rig.back.Open("/dev/hidraw1")
	require.ErrorIs(t, err, devgrant.ErrNotGranted)
	var oe *hid.OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "open /dev/hidraw1: device not granted to this driver", err.Error())

	// Close ends a read in progress with ErrClosed.
	done := make(chan error, 1)
	go func() { _, err := dev.ReadInput(context.Background(), buf); done <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, dev.Close())
	require.ErrorIs(t, <-done, hid.ErrClosed)
	require.ErrorIs(t, dev.Close(), hid.ErrClosed)
	require.ErrorIs(t, dev.WriteOutput([]byte{0, 1}), hid.ErrClosed)
}

func TestHIDUnplugMidRead(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer dev.Close()
	done := make(chan error, 1)
	go func() { _, err := dev.ReadInput(context.Background(), make([]byte, 8)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	rig.fake.Unplug()
	err = <-done
	require.ErrorIs(t, err, hid.ErrNoDevice)
	require.ErrorIs(t, err, hid.ErrNoDevice, "typed as driver.ErrNoDevice, so it crosses the daemon's socket")
	require.Equal(t, "read /dev/hidraw0: no such device", err.Error())
	require.ErrorIs(t, dev.WriteOutput([]byte{0, 1}), hid.ErrNoDevice)
}

// The grant closing (the daemon terminated the nub) is the device going
// away for the driver, even mid-read.
func TestHIDGrantClosedMidRead(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer dev.Close()
	done := make(chan error, 1)
	go func() { _, err := dev.ReadInput(context.Background(), make([]byte, 8)); done <- err }()
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, rig.g.Close())
	// The driver's copy of the socket is the driver process's: here, in
	// one process, the test holds it in g.Files until Close, which
	// closed it; the driver's duplicate reads EOF.
	require.ErrorIs(t, <-done, hid.ErrNoDevice)
	require.Zero(t, rig.fake.OpenHandles(), "the daemon's handle is closed")
	_, err = dev.Info()
	require.ErrorIs(t, err, hid.ErrNoDevice)
}

// Several goroutines call at once; replies find their callers.
func TestHIDConcurrentCalls(t *testing.T) {
	leaktest.Check(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer dev.Close()
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			for range 50 {
				if err := dev.WriteOutput([]byte{0, byte(i)}); err != nil {
					errs <- err
					return
				}
				if _, err := dev.Info(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 16 {
		require.NoError(t, <-errs)
	}
	require.Len(t, rig.fake.Outputs(), 16*50)
}

// hidkbd, unchanged, runs on the granted resource.
func TestHIDKeyboardDriverOnGrant(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newHIDRig(t)
	r := newRegistry(t)
	ps, err := hidkbd.Entry.Personalities(devgrant.Resources(rig.g.Files))
	require.NoError(t, err)
	require.NoError(t, r.RegisterPersonality(ps[0]))
	nub := publish(t, r, devgrant.HIDProviderClass, "hid0", map[string]any{
		hidbus.PropHidraw: "/dev/hidraw0", hidkbd.PropUsagePage: uint64(hid.UsagePageGenericDesktop), hidkbd.PropUsage: uint64(hid.UsageKeyboard),
	})
	require.Len(t, nub.Clients(), 1, "hidkbd started on the granted node")
	kbd := nub.Clients()[0]
	rig.fake.Input([]byte{0, 0, 0x0b, 0, 0, 0, 0, 0}) // h
	out, err := kbd.Call(context.Background(), hidkbd.MethodRead, []byte(`{"after":0}`))
	require.NoError(t, err)
	var rr hidkbd.ReadReply
	require.NoError(t, json.Unmarshal(out, &rr))
	require.Equal(t, hidkbd.ReadReply{Seq: 1, Report: "00000b0000000000", Pressed: []int{0x0b}}, rr)
	// Driver → device: the LED report crosses the socket.
	_, err = kbd.Call(context.Background(), hidkbd.MethodLEDs, []byte(`{"leds":2}`))
	require.NoError(t, err)
	require.Contains(t, rig.fake.Outputs(), []byte{0, 2})
}

// A driver that sends something that is not the protocol is cut off: its
// calls fail as for a vanished device, and the grant's Close says why.
func TestMalformedMessageEndsConnection(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)
	defer dev.Close()
	_, err = unix.Write(int(rig.g.Files[0].File.Fd()), []byte{9, 0x12, 1, 0, 0, 0}) // version 9
	require.NoError(t, err)
	_, err = dev.Info()
	require.ErrorIs(t, err, hid.ErrNoDevice)
	require.ErrorIs(t, rig.g.Close(), devgrant.ErrProtocol)
}

// More requests in flight than the daemon serves at once are refused, not
// queued without bound.
func TestTooManyInFlight(t *testing.T) {
	leaktest.Check(t)
	rig := newHIDRig(t)
	dev, err := rig.back.Open("/dev/hidraw0")
	require.NoError(t, err)
	// Reads never complete here, so the requests in flight only grow:
	// of 40, the daemon serves 32 and refuses 8 at once.
	const served, sent = 32, 40
	errs := make(chan error, sent)
	for range sent {
		go func() { _, err := dev.ReadInput(context.Background(), make([]byte, 8)); errs <- err }()
	}
	tooMany := func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "too many requests in flight on the device socket")
	}
	for range sent - served {
		require.True(t, tooMany(<-errs))
	}
	_, err = dev.Info()
	require.True(t, tooMany(err), "%v", err)
	require.NoError(t, dev.Close())
	for range served {
		require.ErrorIs(t, <-errs, hid.ErrClosed)
	}
}

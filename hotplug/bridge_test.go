package hotplug_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/hotplugtest"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

func loadScenario(t *testing.T, path string) *sim.Scenario {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc, err := sim.ParseScenario(path, f)
	require.NoError(t, err)
	return sc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newRegistry returns a registry whose trace is checked and which is
// closed at the end of the test.
func newRegistry(t *testing.T) (*driver.Registry, *lifecycletest.Recorder) {
	// Start failures (the storm's cancelled Starts) are logged: keep quiet.
	r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
	rec := lifecycletest.Record(t, r)
	t.Cleanup(func() {
		require.NoError(t, r.Close(ctxT(t)))
		rec.Check(t)
	})
	return r, rec
}

// tree renders the registry below the root: "Class name {props}" indented.
func tree(r *driver.Registry, keys ...string) string {
	var sb strings.Builder
	var walk func(s *driver.Service, depth int)
	walk = func(s *driver.Service, depth int) {
		for _, c := range s.Clients() {
			fmt.Fprintf(&sb, "%s%s %s", strings.Repeat("  ", depth), c.Class(), c.Name())
			for _, k := range keys {
				if v, ok := c.Properties().Get(k); ok {
					fmt.Fprintf(&sb, " %s=%v", k, v)
				}
			}
			sb.WriteString("\n")
			walk(c, depth+1)
		}
	}
	walk(r.Root(), 0)
	return sb.String()
}

// TestBridgeQEMUScenario drives the bridge with the replay of the QEMU
// capture (the simulator's sysfs mirror supplies the strings) and checks
// the registry it builds.
func TestBridgeQEMUScenario(t *testing.T) {
	leaktest.Check(t)
	r, _ := newRegistry(t)
	dir := t.TempDir()
	src, err := sim.New(loadScenario(t, "sim/testdata/scenarios/qemu-capture.scn"), sim.Config{SysfsDir: dir, SkipWaits: true})
	require.NoError(t, err)
	defer src.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: dir})
	defer b.Close()
	require.NoError(t, b.Run(ctxT(t), src))
	require.NoError(t, b.Flush(ctxT(t)))
	require.NoError(t, r.WaitQuiet(ctxT(t)))

	// In publication order; the virtio disks hang under the root, the
	// sticks' disks under their USB interface.
	require.Equal(t, `USBDevice 2-2 serial=PROBE123 idVendor=18164 manufacturer=QEMU
  USBInterface 2-2:1.0 idVendor=18164 bInterfaceClass=8
    SCSIDevice 1:0:0:0 sg=/dev/sg1 vendor=QEMU model=QEMU HARDDISK
USBDevice 2-3 serial=SECOND idVendor=18164 manufacturer=QEMU
  USBInterface 2-3:1.0 idVendor=18164 bInterfaceClass=8
    SCSIDevice 2:0:0:0 sg=/dev/sg2 vendor=QEMU model=QEMU HARDDISK
SCSIDevice 0:0:0:0 sg=/dev/sg0 vendor=QEMU model=QEMU HARDDISK
SCSIDevice 0:0:0:1 sg=/dev/sg3 vendor=QEMU model=QEMU HARDDISK
`, tree(r, "sg", "serial", "idVendor", "bInterfaceClass", "manufacturer", "vendor", "model"))
	st := b.Stats()
	require.Zero(t, st.UnknownRemoves)
	require.Zero(t, st.PublishErrors)
	require.Zero(t, st.Dropped)
	// 2-1, its interface and its LUN; the first 0:0:0:0.
	require.Equal(t, uint64(4), st.Terminated)
}

// recDriver records the messages its instances get.
type recDriver struct {
	mu   sync.Mutex
	msgs []driver.Message
}

func (d *recDriver) Start(ctx context.Context, s *driver.Service) error { return nil }
func (d *recDriver) Stop(s *driver.Service)                             {}
func (d *recDriver) Message(s *driver.Service, m driver.Message) error {
	d.mu.Lock()
	d.msgs = append(d.msgs, m)
	d.mu.Unlock()
	return nil
}

func mustEvent(t *testing.T, a hotplug.Action, devpath, subsystem string, env ...string) hotplug.Event {
	t.Helper()
	ev, err := hotplug.NewEvent(a, devpath, subsystem, 0, env...)
	require.NoError(t, err)
	return ev
}

func usbDevEnv(devnum int) []string {
	return []string{"DEVTYPE=usb_device", "PRODUCT=1234/5678/100", "TYPE=0/0/0", "BUSNUM=002", fmt.Sprintf("DEVNUM=%03d", devnum)}
}

const ifaceEnv = "INTERFACE=3/1/1"

// TestBridgeEdgeCases: duplicate adds become change messages, a remove
// nobody knows is counted, a parent's removal takes its children even when
// their removes come later (or before their adds were published), and a
// device replaced at the same path while its remove was lost is
// terminated and published anew.
func TestBridgeEdgeCases(t *testing.T) {
	leaktest.Check(t)
	r, _ := newRegistry(t)
	drv := &recDriver{}
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "hid", ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{driver.MatchValue(usbbus.PropIfaceClass, 3)}, New: func() driver.Driver { return drv }}))
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
	defer b.Close()
	const dev = "/devices/pci0000:00/0000:00:02.0/usb2/2-1"
	const ifc = dev + "/2-1:1.0"
	addDev := mustEvent(t, hotplug.ActionAdd, dev, "usb", usbDevEnv(2)...)
	addIfc := mustEvent(t, hotplug.ActionAdd, ifc, "usb", "DEVTYPE=usb_interface", "PRODUCT=1234/5678/100", "TYPE=0/0/0", ifaceEnv)
	b.Handle(addDev)
	b.Handle(addIfc)
	require.NoError(t, b.Flush(ctxT(t)))
	require.Equal(t, "USBDevice 2-1 idProduct=22136\n  USBInterface 2-1:1.0 idProduct=22136\n    hid hid idProduct=22136\n", tree(r, "idProduct"))

	// Duplicate add: the driver is told, nothing is republished.
	b.Handle(addIfc)
	b.Handle(mustEvent(t, hotplug.ActionBind, ifc, "usb", "DEVTYPE=usb_interface", "DRIVER=usbhid", "PRODUCT=1234/5678/100", "TYPE=0/0/0", ifaceEnv))
	require.Eventually(t, func() bool {
		drv.mu.Lock()
		defer drv.mu.Unlock()
		n := 0
		for _, m := range drv.msgs {
			if m.Type == hotplug.MessageDeviceChanged {
				n++
			}
		}
		return n == 2
	}, 10*time.Second, time.Millisecond)

	// Unknown remove.
	b.Handle(mustEvent(t, hotplug.ActionRemove, dev+"/2-1:1.7", "usb", "DEVTYPE=usb_interface"))
	// Parent removed first: the interface (and its driver) go with it; the
	// interface's own remove is late, not unknown.
	b.Handle(mustEvent(t, hotplug.ActionRemove, dev, "usb", usbDevEnv(2)...))
	b.Handle(mustEvent(t, hotplug.ActionRemove, ifc, "usb", "DEVTYPE=usb_interface", ifaceEnv))
	require.NoError(t, b.Flush(ctxT(t)))
	require.NoError(t, r.WaitQuiet(ctxT(t)))
	require.Empty(t, tree(r))

	// Replaced: another device (new devnum) at the same path, remove lost.
	b.Handle(addDev)
	b.Handle(mustEvent(t, hotplug.ActionAdd, dev, "usb", usbDevEnv(3)...))
	require.NoError(t, b.Flush(ctxT(t)))
	require.NoError(t, r.WaitQuiet(ctxT(t)))
	require.Equal(t, "USBDevice 2-1 devnum=3\n", tree(r, "devnum"))

	st := b.Stats()
	require.Equal(t, uint64(1), st.UnknownRemoves)
	require.Equal(t, uint64(1), st.LateRemoves)
	require.Equal(t, uint64(2), st.Changed)
	require.Equal(t, uint64(1), st.Replaced)
	require.Equal(t, uint64(3), st.Terminated)
}

// TestBridgeSCSIWaitsForSG: on a live system the sg node's uevent comes
// after the LUN's; the nub is published when it arrives, with it — or
// without one when the LUN binds and no sg node came.
func TestBridgeSCSIWaitsForSG(t *testing.T) {
	leaktest.Check(t)
	r, _ := newRegistry(t)
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
	defer b.Close()
	const lun = "/devices/virtio0/host0/target0:0:0/0:0:0:0"
	b.Handle(mustEvent(t, hotplug.ActionAdd, lun, "scsi", "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00"))
	require.NoError(t, b.Flush(ctxT(t)))
	require.Empty(t, tree(r))
	b.Handle(mustEvent(t, hotplug.ActionAdd, lun+"/scsi_generic/sg4", "scsi_generic", "MAJOR=21", "MINOR=4", "DEVNAME=sg4"))
	require.NoError(t, b.Flush(ctxT(t)))
	require.Equal(t, "SCSIDevice 0:0:0:0 sg=/dev/sg4 type=0\n", tree(r, "sg", "type"))

	const lun2 = "/devices/virtio0/host0/target0:0:0/0:0:0:1"
	b.Handle(mustEvent(t, hotplug.ActionAdd, lun2, "scsi", "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x05"))
	b.Handle(mustEvent(t, hotplug.ActionBind, lun2, "scsi", "DEVTYPE=scsi_device", "DRIVER=sr", "MODALIAS=scsi:t-0x05"))
	require.NoError(t, b.Flush(ctxT(t)))
	require.Equal(t, "SCSIDevice 0:0:0:0 sg=/dev/sg4 type=0\nSCSIDevice 0:0:0:1 type=5\n", tree(r, "sg", "type"))

	// A LUN removed before its sg node came is simply forgotten.
	const lun3 = "/devices/virtio0/host0/target0:0:0/0:0:0:2"
	b.Handle(mustEvent(t, hotplug.ActionAdd, lun3, "scsi", "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00"))
	b.Handle(mustEvent(t, hotplug.ActionRemove, lun3, "scsi", "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00"))
	require.Zero(t, b.Stats().UnknownRemoves)
}

// stormDriver matches both interfaces of the storm device. Every third
// instance's Start blocks until its service is terminated (the unplug
// arrives during Start); the others start at once.
type stormDriver struct {
	starts, cancelled, stops *atomic.Int64
	slow                     bool
}

func (d *stormDriver) Start(ctx context.Context, s *driver.Service) error {
	d.starts.Add(1)
	if d.slow {
		<-ctx.Done()
		d.cancelled.Add(1)
		return ctx.Err()
	}
	return nil
}

func (d *stormDriver) Stop(s *driver.Service) { d.stops.Add(1) }

// TestBridgeStorm: 1,000 plug/unplug cycles of a two-interface device, with
// a duplicate add in every cycle and removes arriving during Start, through
// the simulator and the bridge into a registry with matching drivers. The
// registry is empty at the end, the trace passes the checker, nothing
// leaks.
func TestBridgeStorm(t *testing.T) {
	leaktest.Check(t)
	r, rec := newRegistry(t)
	var starts, cancelled, stops, n atomic.Int64
	require.NoError(t, r.RegisterPersonality(driver.Personality{Name: "storm", ProviderClass: usbbus.ClassInterface,
		Match: []driver.Match{driver.MatchValue(usbbus.PropVendorID, 0x1234)},
		New: func() driver.Driver {
			return &stormDriver{starts: &starts, cancelled: &cancelled, stops: &stops, slow: n.Add(1)%3 == 0}
		}}))
	// No sysfs mirror (it would dominate the run time): the LUNs are
	// published when their sg node's event arrives.
	src, err := sim.New(loadScenario(t, "sim/testdata/scenarios/storm.scn"), sim.Config{})
	require.NoError(t, err)
	defer src.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
	require.NoError(t, b.Run(ctxT(t), src))
	require.NoError(t, b.Flush(ctxT(t)))
	require.NoError(t, r.WaitQuiet(ctxT(t)))
	require.NoError(t, b.Close())

	require.Len(t, r.Services(), 1, "only the root is left:\n%s", tree(r))
	st := b.Stats()
	t.Logf("bridge: %+v; driver starts %d (cancelled by the unplug %d), stops %d", st, starts.Load(), cancelled.Load(), stops.Load())
	require.Equal(t, uint64(1000*4), st.Published) // device, 2 interfaces, the LUN
	// Per cycle: the dup of each nub, binds of the device, the storage
	// interface and the LUN, the LUN's unit-attention change, and their
	// three unbinds.
	require.Equal(t, uint64(1000*11), st.Changed)
	require.Equal(t, uint64(1000*4), st.Terminated)
	require.Zero(t, st.UnknownRemoves)
	require.NotZero(t, starts.Load(), "no driver ever started")
	require.NotZero(t, cancelled.Load(), "no remove arrived during a Start")
	// Every driver that started was stopped; the cancelled ones never were.
	require.Equal(t, starts.Load()-cancelled.Load(), stops.Load())
	rec.CheckPartial(t)
}

// TestBridgeColdplugQEMU publishes what a coldplug walk of the QEMU guest's
// sysfs finds: root hubs, the stick behind its root hub, both disks.
func TestBridgeColdplugQEMU(t *testing.T) {
	leaktest.Check(t)
	r, _ := newRegistry(t)
	root := hotplugtest.QEMUSysfs(t, qemuSysfs)
	cp, err := hotplug.NewColdplug(root, buses.Classes())
	require.NoError(t, err)
	defer cp.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: root})
	defer b.Close()
	require.NoError(t, b.Run(ctxT(t), cp))
	require.NoError(t, b.Flush(ctxT(t)))
	// Root hubs' serial is their controller's name, as the kernel sets it.
	require.Equal(t, `USBDevice usb1 idVendor=7531 serial=0000:00:02.0
  USBInterface 1-0:1.0 idVendor=7531 bInterfaceClass=9
USBDevice usb2 idVendor=7531 serial=0000:00:02.0
  USBInterface 2-0:1.0 idVendor=7531 bInterfaceClass=9
  USBDevice 2-1 idVendor=18164 serial=PROBE123
    USBInterface 2-1:1.0 idVendor=18164 bInterfaceClass=8
      SCSIDevice 1:0:0:0 sg=/dev/sg1 model=QEMU HARDDISK
USBDevice usb3 idVendor=7531 serial=dummy_hcd.0
  USBInterface 3-0:1.0 idVendor=7531 bInterfaceClass=9
SCSIDevice 0:0:0:0 sg=/dev/sg0 model=QEMU HARDDISK
`, tree(r, "idVendor", "bInterfaceClass", "serial", "sg", "model"))
	require.Zero(t, b.Stats().Dropped)
}

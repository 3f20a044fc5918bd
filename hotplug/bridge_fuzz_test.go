package hotplug_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// fuzzDevices is a small machine: two devices (a stick with two
// interfaces and a LUN behind the second; a keyboard whose interface has a
// HID device with a hidraw node), and a virtio LUN.
var fuzzDevices = []struct {
	path, subsystem string
	env             []string
}{
	{"/devices/x/usb2/2-1", "usb", []string{"DEVTYPE=usb_device", "PRODUCT=1234/5678/1", "TYPE=0/0/0", "BUSNUM=002", "DEVNUM=002"}},
	{"/devices/x/usb2/2-1/2-1:1.0", "usb", []string{"DEVTYPE=usb_interface", "PRODUCT=1234/5678/1", "TYPE=0/0/0", "INTERFACE=3/1/1"}},
	{"/devices/x/usb2/2-1/2-1:1.1", "usb", []string{"DEVTYPE=usb_interface", "PRODUCT=1234/5678/1", "TYPE=0/0/0", "INTERFACE=8/6/80"}},
	{"/devices/x/usb2/2-1/2-1:1.1/host1", "scsi", []string{"DEVTYPE=scsi_host"}},
	{"/devices/x/usb2/2-1/2-1:1.1/host1/target1:0:0", "scsi", []string{"DEVTYPE=scsi_target"}},
	{"/devices/x/usb2/2-1/2-1:1.1/host1/target1:0:0/1:0:0:0", "scsi", []string{"DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00"}},
	{"/devices/x/usb2/2-1/2-1:1.1/host1/target1:0:0/1:0:0:0/scsi_generic/sg1", "scsi_generic", []string{"MAJOR=21", "MINOR=1", "DEVNAME=sg1"}},
	{"/devices/x/usb2/2-2", "usb", []string{"DEVTYPE=usb_device", "PRODUCT=1234/5678/1", "TYPE=0/0/0", "BUSNUM=002", "DEVNUM=003"}},
	{"/devices/x/usb2/2-2/2-2:1.0", "usb", []string{"DEVTYPE=usb_interface", "PRODUCT=1234/5678/1", "TYPE=0/0/0", "INTERFACE=3/1/1"}},
	{"/devices/virtio0/host0/target0:0:0/0:0:0:0", "scsi", []string{"DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00"}},
	{"/devices/virtio0/host0/target0:0:0/0:0:0:0/scsi_generic/sg0", "scsi_generic", []string{"MAJOR=21", "MINOR=0", "DEVNAME=sg0"}},
	{"/devices/x/usb2/2-2/2-2:1.0/0003:1234:5678.0001", "hid", []string{"HID_ID=0003:00001234:00005678", "HID_NAME=K", "HID_PHYS=p", "HID_UNIQ="}},
	{"/devices/x/usb2/2-2/2-2:1.0/0003:1234:5678.0001/hidraw/hidraw0", "hidraw", []string{"MAJOR=241", "MINOR=0", "DEVNAME=hidraw0"}},
}

var fuzzActions = []hotplug.Action{hotplug.ActionAdd, hotplug.ActionRemove, hotplug.ActionChange, hotplug.ActionBind,
	hotplug.ActionUnbind, hotplug.ActionAdd, hotplug.ActionRemove}

type nopDriver struct{}

func (nopDriver) Start(ctx context.Context, s *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                               {}

// FuzzBridge feeds the bridge arbitrary sequences of events — adds before
// parents, removes out of order, duplicates, removes of what never came —
// then unplugs everything: whatever happened, the registry ends empty and
// the lifecycle trace satisfies the termination contract.
func FuzzBridge(f *testing.F) {
	f.Add([]byte{0, 7, 14, 21, 28, 35, 42, 1, 8})
	f.Add([]byte{35, 0, 42, 7, 1, 36, 8, 15, 70, 77})
	f.Add([]byte{63, 70, 2, 9, 16, 0, 0, 1, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 200 {
			ops = ops[:200]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := driver.NewRegistry(driver.WithLogger(slog.New(slog.DiscardHandler)))
		var mu sync.Mutex
		var events []driver.LifecycleEvent
		stop := r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
		defer stop()
		if err := r.RegisterPersonality(driver.Personality{Name: "any", ProviderClass: usbbus.ClassInterface,
			New: func() driver.Driver { return nopDriver{} }}); err != nil {
			t.Fatal(err)
		}
		b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: t.TempDir()})
		emit := func(a hotplug.Action, i int) {
			d := fuzzDevices[i]
			ev, err := hotplug.NewEvent(a, d.path, d.subsystem, 0, d.env...)
			if err != nil {
				t.Fatal(err)
			}
			b.Handle(ev)
		}
		for _, op := range ops {
			emit(fuzzActions[int(op)%len(fuzzActions)], int(op/byte(len(fuzzActions)))%len(fuzzDevices))
		}
		// Unplug everything, top-level devices only: their removal must
		// take every child along.
		emit(hotplug.ActionRemove, 0)
		emit(hotplug.ActionRemove, 7)
		emit(hotplug.ActionRemove, 9)
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.WaitQuiet(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(r.Services()); n != 1 {
			t.Fatalf("%d services left after unplugging everything", n-1)
		}
		b.Close()
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if err := lifecycletest.Validate(events, true); err != nil {
			t.Fatalf("trace violates the contract: %v", err)
		}
	})
}

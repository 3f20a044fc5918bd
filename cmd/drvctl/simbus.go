package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// simBus gives the devices of a simulated bus something to talk to: when
// the simulator plugs a USB device with a mass-storage interface, a fake
// USB device with a bulk-only in-memory disk appears in the fake USB
// backend at the same bus and address, before the bridge publishes its nub;
// when it is unplugged, the fake device goes too, failing in-flight
// transfers as a real unplug does. SCSI disks get an in-memory disk behind
// their sg node. A disk written to is kept per serial number (per HCTL for
// SCSI), so a replugged stick has the data written to it before; one never
// written is dropped with its device (it costs nothing to make again: its
// label is not stored), so plugging and unplugging many devices does not
// keep memory for each.
type simBus struct {
	src   hotplug.Source
	usb   *usbsim.Backend
	hid   *hidsim.Backend
	sysfs string // the simulator's sysfs mirror, for serial numbers and HID descriptors

	mu      sync.Mutex
	devices map[string]usbDeviceSeen  // usb_device devpath → what its add said
	plugged map[string]*usbsim.Device // usb_device devpath → fake device
	disks   map[string]*scsisim.Disk  // serial or HCTL → its disk
	sg      map[string]*scsisim.Disk  // /dev/sgN → disk
	sgOpen  map[string][]*scsisim.Transport

	// onPlug, if set, is told of each fake USB device plugged (the daemon
	// re-attaches kernel drivers its killed predecessor left detached).
	onPlug func(usb.DeviceInfo)

	// Kernel-driver changes of the fake devices, queued for the worker that
	// turns them into simulator steps (see followKernelDrivers).
	bindMu   sync.Mutex
	binds    []bindChange
	pending  int           // changes queued or being applied
	idleCh   chan struct{} // closed when pending drops to 0
	bindKick chan struct{}
	stop     chan struct{}
	worker   sync.WaitGroup
}

type bindChange struct {
	bus, addr, iface int
	from, to         string
}

type usbDeviceSeen struct {
	bus, addr       int
	vendor, product uint16
	serial          string
}

// simDiskBlocks is the size of every simulated disk: 64 MiB of 512-byte
// blocks, sparse in memory.
const simDiskBlocks = 131072

var _ hotplug.Source = (*simBus)(nil)

func newSimBus(src hotplug.Source, usb *usbsim.Backend, hid *hidsim.Backend, sysfs string) *simBus {
	return &simBus{src: src, usb: usb, hid: hid, sysfs: sysfs, devices: map[string]usbDeviceSeen{}, plugged: map[string]*usbsim.Device{},
		disks: map[string]*scsisim.Disk{}, sg: map[string]*scsisim.Disk{}, sgOpen: map[string][]*scsisim.Transport{}}
}

func (b *simBus) Close() error {
	err := b.src.Close()
	if b.stop != nil {
		b.bindMu.Lock()
		select {
		case <-b.stop:
		default:
			close(b.stop)
		}
		b.bindMu.Unlock()
		b.worker.Wait()
	}
	return err
}

// followKernelDrivers makes the simulated kernel report what a real one
// does when a driver claims or releases an interface: when usbstorage
// claims a stick (detaching usb-storage), usb-storage's SCSI host and disk
// are removed and the interface is bound to usbfs; when it lets go and
// usb-storage is re-attached, the disk comes back. The changes are noticed
// under the fake device's lock, so they are queued and turned into
// simulator steps by a worker goroutine, which Close stops.
func (b *simBus) followKernelDrivers(inject func(context.Context, *sim.Scenario) error, log *slog.Logger) {
	b.bindKick = make(chan struct{}, 1)
	b.stop = make(chan struct{})
	b.usb.OnKernelDriver(func(spec usbsim.DeviceSpec, iface int, from, to string) {
		b.bindMu.Lock()
		b.binds = append(b.binds, bindChange{bus: spec.Bus, addr: spec.Address, iface: iface, from: from, to: to})
		if b.pending == 0 {
			b.idleCh = make(chan struct{})
		}
		b.pending++
		b.bindMu.Unlock()
		select {
		case b.bindKick <- struct{}{}:
		default:
		}
	})
	// ctx ends an injection under way when the bus closes.
	ctx, cancel := context.WithCancel(context.Background())
	b.worker.Add(2)
	go func() {
		defer b.worker.Done()
		<-b.stop
		cancel()
	}()
	go func() {
		defer b.worker.Done()
		for {
			select {
			case <-b.stop:
				return
			case <-b.bindKick:
			}
			b.bindMu.Lock()
			todo := b.binds
			b.binds = nil
			b.bindMu.Unlock()
			if len(todo) == 0 {
				// A kick for changes an earlier round already took: idleCh
				// was closed then and must not be closed again.
				continue
			}
			for _, c := range todo {
				steps := b.bindSteps(c)
				if steps == "" {
					continue
				}
				frag, err := sim.ParseScenarioFragment("kernel driver change", steps)
				if err == nil {
					err = inject(ctx, frag)
				}
				if err != nil {
					// The device went away meanwhile, or the daemon is
					// stopping: the simulated kernel has nothing to report.
					log.Debug("simulated kernel driver change not applied", "steps", steps, "err", err)
				}
			}
			b.bindMu.Lock()
			b.pending -= len(todo)
			if b.pending == 0 {
				close(b.idleCh)
			}
			b.bindMu.Unlock()
		}
	}()
}

// idle reports whether no kernel-driver change is queued or being applied.
func (b *simBus) idle() bool {
	b.bindMu.Lock()
	defer b.bindMu.Unlock()
	return b.pending == 0
}

// waitKernelDrivers waits until every kernel-driver change noticed so far
// has been applied to the simulator (and so handled by the bridge).
func (b *simBus) waitKernelDrivers(ctx context.Context) error {
	b.bindMu.Lock()
	idle, pending := b.idleCh, b.pending
	b.bindMu.Unlock()
	if pending == 0 {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bindSteps is the scenario for one change, or "" if the device is gone.
func (b *simBus) bindSteps(c bindChange) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for devpath, seen := range b.devices {
		if seen.bus != c.bus || seen.addr != c.addr {
			continue
		}
		port := path.Base(devpath)
		var steps string
		if c.from != "" {
			steps += fmt.Sprintf("unbind %s iface=%d\n", port, c.iface)
		}
		if c.to != "" {
			steps += fmt.Sprintf("bind %s iface=%d driver=%s\n", port, c.iface, c.to)
		}
		return steps
	}
	return ""
}

func (b *simBus) Next(ctx context.Context) (hotplug.Event, error) {
	ev, err := b.src.Next(ctx)
	if err != nil {
		return ev, err
	}
	b.apply(&ev)
	return ev, nil
}

func (b *simBus) apply(ev *hotplug.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case ev.Subsystem == "usb" && ev.DevType == "usb_device":
		switch ev.Action {
		case hotplug.ActionAdd:
			d, err := ev.USBDevice()
			if err != nil {
				return
			}
			_ = d.ReadAttrs(b.sysfs, ev.DevPath) // the serial, when the scenario gave one
			b.devices[ev.DevPath] = usbDeviceSeen{bus: d.BusNum, addr: d.DevNum, vendor: d.Vendor, product: d.Product, serial: d.Serial}
		case hotplug.ActionRemove:
			if fake := b.plugged[ev.DevPath]; fake != nil {
				fake.Unplug()
				b.dropUnwrittenLocked(usbDiskKey(ev.DevPath, b.devices[ev.DevPath]))
			}
			delete(b.plugged, ev.DevPath)
			delete(b.devices, ev.DevPath)
		}
	case ev.Subsystem == "usb" && ev.DevType == "usb_interface" && ev.Action == hotplug.ActionAdd:
		in, err := ev.USBInterface()
		if err != nil || in.Class != 0x08 || in.SubClass != 0x06 || in.Protocol != 0x50 {
			return
		}
		parent := in.DevicePath
		seen, ok := b.devices[parent]
		if !ok || b.plugged[parent] != nil {
			return
		}
		key := usbDiskKey(parent, seen)
		_, fake := b.usb.PlugMassStorage(usbsim.DeviceSpec{Bus: seen.bus, Address: seen.addr,
			Vendor: seen.vendor, Product: seen.product, Serial: seen.serial}, b.disk(key, "QEMU", "QEMU HARDDISK"))
		b.plugged[parent] = fake
		if b.onPlug != nil {
			b.onPlug(usb.DeviceInfo{Bus: seen.bus, Address: seen.addr, Vendor: seen.vendor, Product: seen.product})
		}
	case ev.Subsystem == "hid" || ev.Subsystem == "hidraw":
		b.applyHID(ev)
	case ev.Subsystem == "scsi_generic":
		node := "/dev/" + ev.Name()
		switch ev.Action {
		case hotplug.ActionAdd:
			b.sg[node] = b.sgDiskLocked(node, ev.DevPath)
		case hotplug.ActionRemove:
			for _, t := range b.sgOpen[node] {
				t.Unplug()
			}
			delete(b.sgOpen, node)
			delete(b.sg, node)
			b.dropUnwrittenLocked(sgDiskKey(ev.DevPath))
		}
	}
}

// applyHID plugs a simulated hidraw node when the simulator adds a HID
// device or its node (whichever comes first: the node is in the sysfs
// mirror before either event) and unplugs it at the node's remove,
// failing reads in progress.
func (b *simBus) applyHID(ev *hotplug.Event) {
	switch {
	case ev.Action == hotplug.ActionAdd && ev.Subsystem == "hid":
		_, _ = b.hid.PlugSysfs(b.sysfs, ev.DevPath)
	case ev.Action == hotplug.ActionAdd:
		_, _ = b.hid.PlugSysfs(b.sysfs, path.Dir(path.Dir(ev.DevPath))) // …/DEVICE/hidraw/hidrawN
	case ev.Action == hotplug.ActionRemove && ev.Subsystem == "hidraw":
		if dev := b.hid.Device("/dev/" + ev.Name()); dev != nil {
			dev.Unplug()
		}
	}
}

// sgDiskLocked is the disk behind an sg node whose device path (or sysfs
// link target) ends in …/H:C:T:L/scsi_generic/sgN.
func (b *simBus) sgDiskLocked(node, devpath string) *scsisim.Disk {
	return b.disk(sgDiskKey(devpath), "QEMU", "QEMU HARDDISK")
}

func sgDiskKey(devpath string) string {
	return "scsi:" + path.Base(path.Dir(path.Dir(devpath)))
}

func usbDiskKey(devpath string, seen usbDeviceSeen) string {
	if seen.serial == "" {
		return "usb@" + devpath
	}
	return "usb:" + seen.serial
}

// dropUnwrittenLocked forgets the disk at key if nothing was written to
// it: its device is gone, and a new one would be the same.
func (b *simBus) dropUnwrittenLocked(key string) {
	if d := b.disks[key]; d != nil && !d.Written() {
		delete(b.disks, key)
	}
}

func (b *simBus) disk(key, vendor, product string) *scsisim.Disk {
	d := b.disks[key]
	if d == nil {
		// Block 0 says which disk it is, so a demo read shows something.
		label := fmt.Sprintf("drvkit simulated disk %s\n", strings.TrimPrefix(strings.TrimPrefix(key, "usb:"), "scsi:"))
		d = scsisim.NewDisk(simDiskBlocks, 512, scsisim.WithInquiry(vendor, product, "2.5+", scsi.TypeDisk),
			scsisim.WithContents([]byte(label)))
		b.disks[key] = d
	}
	return d
}

// openSG is the sg driver's opener on a simulated bus: the disk behind a
// simulated /dev/sgN, failing as a vanished device once it is removed.
//
// The sg driver can be started before this bus has seen the node's add
// event: the bridge may learn the node from the simulator's sysfs mirror,
// which is written ahead of the events. So an unknown node is looked up
// there, as opening a real /dev/sgN finds the device whatever the events.
func (b *simBus) openSG(node string) (scsi.Transport, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.sg[node]
	if d == nil {
		target, err := os.Readlink(filepath.Join(b.sysfs, "class", "scsi_generic", path.Base(node)))
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", node, scsi.ErrNoDevice)
		}
		d = b.sgDiskLocked(node, target)
		b.sg[node] = d
	}
	t := scsisim.NewTransport(d)
	b.sgOpen[node] = append(b.sgOpen[node], t)
	return t, nil
}

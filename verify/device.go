package verify

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/hotplug"
)

// A Device is the model of the hardware a driver is verified on: what the
// simulated kernel reports when it is plugged and unplugged (scenario
// lines of hotplug/sim, so the nubs carry exactly the properties the bus
// adapters publish on a real machine), and the in-memory fake behind the
// resources a driver opens it through. Each run attaches a fresh copy.
type Device interface {
	// String names the model in reports ("usb-storage 46f4:0001").
	String() string
	// Plug and Unplug are the simulator's scenario lines.
	Plug() string
	Unplug() string
	// Attach makes this run's fake and provides the resources that reach
	// it (usb, sg, hidraw) in res.
	Attach(res *drivertable.Resources) (Attached, error)
	// Call is what an application calls on the driver by default: a
	// method and its input.
	Call() Call
}

// Attached is one run's instance of a Device.
type Attached interface {
	// Event sees every simulated uevent before the hotplug bridge does
	// (a model plugs its fake node when the kernel adds it).
	Event(ev hotplug.Event)
	// Pull removes the hardware: in-flight transfers fail with no-device
	// (the kernel's remove uevents follow separately).
	Pull()
	// FailNext makes the next transfer fail: with an I/O error, or
	// (noDevice) by the device vanishing while it is in flight. It
	// returns ErrUnsupported if the model cannot.
	FailNext(noDevice bool) error
	// SlowNext makes the next transfer take d longer (cut short by its
	// context); ErrUnsupported if the model cannot.
	SlowNext(d time.Duration) error
	// Check says what the driver left behind: open handles, a kernel
	// driver not re-attached.
	Check() []string
	Close() error
}

// Call is one client call: a method and its input.
type Call struct {
	Method string
	Input  []byte
}

// ErrUnsupported: the device model cannot inject that fault.
var ErrUnsupported = errors.New("not supported by this device model")

// ErrIO is the I/O error FailNext injects.
var ErrIO = errors.New("injected I/O error")

// --- USB mass storage (and plain USB) ---

// USB is a USB device on the fake backend (driver/usb/usbsim) at port
// 2-1: with a bulk-only mass-storage interface in front of an in-memory
// SCSI disk when Disk is set, else the interfaces in Interfaces. Extra
// lists further interfaces (class/subclass/protocol, hex as lsusb shows
// them, "ff/00/00") that the simulated kernel reports but the fake does
// not serve: a second driver's interface, as in a composite device.
type USB struct {
	Vendor, Product uint16
	Serial          string
	Disk            *DiskSpec
	Interfaces      []usbsim.InterfaceSpec
	Extra           []string
	// HID, for class 03 interfaces: the report descriptor usbhid reads
	// (default: a boot keyboard).
	HID []byte
}

// DiskSpec configures an in-memory SCSI disk (driver/scsi/scsisim).
type DiskSpec struct {
	Blocks    uint64
	BlockSize uint32
	Vendor    string
	Model     string
	Rev       string
	Type      scsi.PeripheralType
	ReadOnly  bool
}

func (d *DiskSpec) orDefault() DiskSpec {
	s := DiskSpec{Blocks: 64, BlockSize: 512, Vendor: "DRVKIT", Model: "VERIFY DISK", Rev: "1.0", Type: scsi.TypeDisk}
	if d == nil {
		return s
	}
	if d.Blocks != 0 {
		s.Blocks = d.Blocks
	}
	if d.BlockSize != 0 {
		s.BlockSize = d.BlockSize
	}
	if d.Vendor != "" {
		s.Vendor = d.Vendor
	}
	if d.Model != "" {
		s.Model = d.Model
	}
	if d.Rev != "" {
		s.Rev = d.Rev
	}
	s.Type, s.ReadOnly = d.Type, d.ReadOnly
	return s
}

func (d DiskSpec) disk() *scsisim.Disk {
	opts := []scsisim.Option{scsisim.WithInquiry(d.Vendor, d.Model, d.Rev, d.Type)}
	if d.ReadOnly {
		opts = append(opts, scsisim.ReadOnly())
	}
	return scsisim.NewDisk(d.Blocks, d.BlockSize, opts...)
}

// USBMassStorage is a USB stick: one bulk-only interface, a 64-block disk.
func USBMassStorage() *USB {
	return &USB{Vendor: 0x46f4, Product: 0x0001, Serial: "VERIFY", Disk: &DiskSpec{}}
}

const usbPort = "2-1"

func (u *USB) String() string {
	return fmt.Sprintf("usb %04x:%04x (%s)", u.Vendor, u.Product, strings.Join(u.ifaces(), ","))
}

func (u *USB) ifaces() []string {
	var out []string
	if u.Disk != nil {
		out = append(out, "08/06/50")
	} else {
		for _, i := range u.Interfaces {
			out = append(out, fmt.Sprintf("%02x/%02x/%02x", i.Class, i.SubClass, i.Protocol))
		}
	}
	return append(out, u.Extra...)
}

func (u *USB) Plug() string {
	line := fmt.Sprintf("plug usb %s vid=%04x pid=%04x manufacturer=DRVKIT product=Verifier ifaces=%s", usbPort, u.Vendor, u.Product, strings.Join(u.ifaces(), ","))
	if u.Serial != "" {
		line += " serial=" + u.Serial
	}
	var hids []string
	for _, i := range u.ifaces() {
		if strings.HasPrefix(i, "03/") {
			if u.HID != nil {
				hids = append(hids, "hex:"+hex.EncodeToString(u.HID))
			} else {
				hids = append(hids, "keyboard")
			}
		}
	}
	if len(hids) > 0 {
		line += " hid=" + strings.Join(hids, ",")
	}
	return line + "\n"
}

func (u *USB) Unplug() string { return "unplug " + usbPort + "\n" }

func (u *USB) Call() Call {
	if u.Disk != nil {
		return Call{Method: blockdev.MethodRead, Input: blockdev.EncodeRead(1, 1)}
	}
	return Call{}
}

func (u *USB) Attach(res *drivertable.Resources) (Attached, error) {
	a := &usbDev{backend: usbsim.New(), spec: u}
	// The simulator gives the first device on bus 2 the address 2.
	spec := usbsim.DeviceSpec{Bus: 2, Address: 2, Vendor: u.Vendor, Product: u.Product, Serial: u.Serial, Interfaces: u.Interfaces}
	if u.Disk != nil {
		a.ms, a.dev = a.backend.PlugMassStorage(spec, u.Disk.orDefault().disk())
		a.ms.SetDataInHook(a.hook)
	} else {
		a.dev = a.backend.Plug(spec)
	}
	drivertable.Provide(res, usbstorage.BackendKey, func() (usb.Backend, error) { return a.backend, nil })
	return a, nil
}

type usbDev struct {
	backend *usbsim.Backend
	spec    *USB
	ms      *usbsim.MassStorage
	dev     *usbsim.Device
	next    atomic.Int32 // 1: I/O error, 2: vanish mid-transfer
	slow    atomic.Int64
}

// wait sleeps d unless ctx ends first (a slow device answers late, or
// never, if the host gives up).
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *usbDev) hook(ctx context.Context) error {
	if err := wait(ctx, time.Duration(a.slow.Swap(0))); err != nil {
		return err
	}
	switch a.next.Swap(0) {
	case 1:
		return ErrIO
	case 2:
		a.dev.Unplug()
		return usb.ErrNoDevice
	}
	return nil
}

// KernelDriver is the kernel driver bound to an interface of the fake
// device ("usbfs" while a user-space driver holds it).
func (a *usbDev) KernelDriver(iface int) string { return a.dev.KernelDriver(iface) }

func (a *usbDev) Event(hotplug.Event) {}
func (a *usbDev) Pull()               { a.dev.Unplug() }

func (a *usbDev) FailNext(noDevice bool) error {
	if a.ms == nil {
		return ErrUnsupported
	}
	if noDevice {
		a.next.Store(2)
	} else {
		a.next.Store(1)
	}
	return nil
}

func (a *usbDev) SlowNext(d time.Duration) error {
	if a.ms == nil {
		return ErrUnsupported
	}
	a.slow.Store(int64(d))
	return nil
}

func (a *usbDev) Check() []string {
	var out []string
	if n := a.backend.OpenHandles(); n != 0 {
		out = append(out, fmt.Sprintf("%d USB handle(s) left open", n))
	}
	if !a.dev.Gone() {
		for _, i := range a.spec.Interfaces {
			if i.KernelDriver != "" && a.dev.KernelDriver(i.Number) != i.KernelDriver {
				out = append(out, fmt.Sprintf("kernel driver of interface %d is %q, want %s re-attached", i.Number, a.dev.KernelDriver(i.Number), i.KernelDriver))
			}
		}
		if a.ms != nil {
			if k := a.dev.KernelDriver(0); k != "usb-storage" {
				out = append(out, fmt.Sprintf("kernel driver of interface 0 is %q, want usb-storage re-attached", k))
			}
		}
	}
	return out
}

func (a *usbDev) Close() error { return a.backend.Close() }

// --- SCSI disk behind an sg node ---

// SCSIDisk is a LUN on the machine's SCSI host (0:0:0:0) with an sg node,
// an in-memory disk behind it (what the sg driver opens).
type SCSIDisk struct {
	Disk DiskSpec
}

func (s *SCSIDisk) spec() DiskSpec { return s.Disk.orDefault() }

func (s *SCSIDisk) String() string {
	d := s.spec()
	return fmt.Sprintf("scsi-disk %q %q type %d", d.Vendor, d.Model, d.Type)
}

func (s *SCSIDisk) Plug() string {
	d := s.spec()
	return fmt.Sprintf("scsi add 0:0:0:0 type=%d vendor=%q model=%q rev=%q\n", d.Type, d.Vendor, d.Model, d.Rev)
}

func (s *SCSIDisk) Unplug() string { return "scsi remove 0:0:0:0\n" }

func (s *SCSIDisk) Call() Call {
	return Call{Method: blockdev.MethodRead, Input: blockdev.EncodeRead(1, 1)}
}

func (s *SCSIDisk) Attach(res *drivertable.Resources) (Attached, error) {
	a := &scsiDev{disk: s.spec().disk()}
	drivertable.Provide(res, sg.OpenerKey, func() (sg.Opener, error) { return a.open, nil })
	return a, nil
}

type scsiDev struct {
	disk *scsisim.Disk
	mu   sync.Mutex
	gone bool
	ts   []*sgTransport
	next atomic.Int32
	slow atomic.Int64
}

type sgTransport struct {
	*scsisim.Transport
	closed atomic.Bool
}

func (t *sgTransport) Close() error { t.closed.Store(true); return t.Transport.Close() }

func (a *scsiDev) open(node string) (scsi.Transport, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone {
		return nil, fmt.Errorf("open %s: %w", node, scsi.ErrNoDevice)
	}
	t := &sgTransport{Transport: scsisim.NewTransport(a.disk)}
	t.SetHook(func(ctx context.Context, cmd *scsi.Command) error {
		if err := wait(ctx, time.Duration(a.slow.Swap(0))); err != nil {
			return err
		}
		switch a.next.Swap(0) {
		case 1:
			return fmt.Errorf("%w: %w", scsi.ErrTransport, ErrIO)
		case 2:
			a.Pull()
			return scsi.ErrNoDevice
		}
		return nil
	})
	a.ts = append(a.ts, t)
	return t, nil
}

func (a *scsiDev) Event(ev hotplug.Event) {
	if ev.Subsystem == "scsi_generic" && ev.Action == hotplug.ActionRemove {
		a.Pull()
	}
}

func (a *scsiDev) Pull() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gone = true
	for _, t := range a.ts {
		t.Unplug()
	}
}

func (a *scsiDev) FailNext(noDevice bool) error {
	if noDevice {
		a.next.Store(2)
	} else {
		a.next.Store(1)
	}
	return nil
}

func (a *scsiDev) SlowNext(d time.Duration) error {
	a.slow.Store(int64(d))
	return nil
}

func (a *scsiDev) Check() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, t := range a.ts {
		if !t.closed.Load() {
			n++
		}
	}
	if n > 0 {
		return []string{fmt.Sprintf("%d sg transport(s) left open", n)}
	}
	return nil
}

func (a *scsiDev) Close() error { return nil }

// --- HID keyboard behind a hidraw node ---

// HIDKeyboard is a USB keyboard (interface 03/01/01) that the simulated
// usbhid turns into a HID device with a hidraw node, served by the HID
// fake (driver/hid/hidsim) with Descriptor (default: a boot keyboard).
type HIDKeyboard struct {
	Vendor, Product uint16
	Descriptor      []byte
}

func (k *HIDKeyboard) ids() (uint16, uint16) {
	if k.Vendor == 0 && k.Product == 0 {
		return 0x627, 0x1
	}
	return k.Vendor, k.Product
}

func (k *HIDKeyboard) String() string {
	v, p := k.ids()
	return fmt.Sprintf("hid-keyboard %04x:%04x", v, p)
}

func (k *HIDKeyboard) Plug() string {
	v, p := k.ids()
	desc := "keyboard"
	if k.Descriptor != nil {
		desc = "hex:" + hex.EncodeToString(k.Descriptor)
	}
	return fmt.Sprintf("plug usb 1-1 vid=%04x pid=%04x manufacturer=DRVKIT product=Keyboard ifaces=03/01/01 hid=%s\n", v, p, desc)
}

func (k *HIDKeyboard) Unplug() string { return "unplug 1-1\n" }

func (k *HIDKeyboard) Call() Call { return Call{Method: hidkbd.MethodKeys} }

func (k *HIDKeyboard) Attach(res *drivertable.Resources) (Attached, error) {
	a := &hidDev{backend: hidsim.New()}
	drivertable.Provide(res, hidkbd.BackendKey, func() (hid.Backend, error) { return a.backend, nil })
	return a, nil
}

type hidDev struct {
	backend *hidsim.Backend
	sysfs   string
	mu      sync.Mutex
	nodes   []*hidsim.Device
}

func (a *hidDev) Event(ev hotplug.Event) {
	var d *hidsim.Device
	switch {
	case ev.Action == hotplug.ActionAdd && ev.Subsystem == "hid":
		d, _ = a.backend.PlugSysfs(a.sysfs, ev.DevPath)
	case ev.Action == hotplug.ActionAdd && ev.Subsystem == "hidraw":
		d, _ = a.backend.PlugSysfs(a.sysfs, path.Dir(path.Dir(ev.DevPath)))
	case ev.Action == hotplug.ActionRemove && ev.Subsystem == "hidraw":
		if dev := a.backend.Device("/dev/" + ev.Name()); dev != nil {
			dev.Unplug()
		}
	}
	if d != nil {
		a.mu.Lock()
		a.nodes = append(a.nodes, d)
		a.mu.Unlock()
	}
}

func (a *hidDev) Pull() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range a.nodes {
		d.Unplug()
	}
}

func (a *hidDev) FailNext(noDevice bool) error {
	if !noDevice {
		return ErrUnsupported
	}
	a.Pull() // the node vanishes under the reader in flight
	return nil
}

func (a *hidDev) SlowNext(time.Duration) error { return ErrUnsupported }

func (a *hidDev) Check() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, d := range a.nodes {
		if n := d.OpenHandles(); n > 0 {
			out = append(out, fmt.Sprintf("%s: %d hidraw handle(s) left open", d.Node(), n))
		}
	}
	return out
}

func (a *hidDev) Close() error { return nil }

// sysfsUser is a model that reads the simulator's sysfs mirror.
type sysfsUser interface{ setSysfs(dir string) }

func (a *hidDev) setSysfs(dir string) { a.sysfs = dir }

// ForEntry picks the model for a driver-table entry by the resources it
// needs: usb → USBMassStorage, sg → SCSIDisk, hidraw → HIDKeyboard.
func ForEntry(e drivertable.Entry) (Device, error) {
	for _, n := range e.Needs {
		if m, ok := Models()[modelFor[n]]; ok {
			return m(), nil
		}
	}
	return nil, fmt.Errorf("no device model for a driver that needs %v (give one: %s)", e.Needs, strings.Join(ModelNames(), ", "))
}

var modelFor = map[string]string{"usb": "usb-storage", "sg": "scsi-disk", "hidraw": "hid-keyboard"}

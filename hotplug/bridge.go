package hotplug

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// Nub classes the bridge publishes.
const (
	ClassUSBDevice    = "USBDevice"
	ClassUSBInterface = "USBInterface"
	ClassSCSIDevice   = "SCSIDevice"
)

// Property keys of the nubs (IOKit's names for USB descriptors). Numbers
// are uint64, strings are strings.
const (
	PropDevPath       = "devpath"      // sysfs device path, all nubs
	PropVendorID      = "idVendor"     // USB device and interface
	PropProductID     = "idProduct"    // USB device and interface
	PropBcdDevice     = "bcdDevice"    // USB device
	PropDeviceClass   = "bDeviceClass" // USB device
	PropDeviceSub     = "bDeviceSubClass"
	PropDeviceProto   = "bDeviceProtocol"
	PropBusNum        = "busnum"
	PropDevNum        = "devnum"
	PropPort          = "port"
	PropDevNode       = "devnode" // USB device: /dev/bus/usb/BBB/DDD
	PropManufacturer  = "manufacturer"
	PropProduct       = "product"
	PropSerial        = "serial"
	PropIfaceNumber   = "bInterfaceNumber" // USB interface
	PropIfaceClass    = "bInterfaceClass"
	PropIfaceSub      = "bInterfaceSubClass"
	PropIfaceProto    = "bInterfaceProtocol"
	PropConfiguration = "bConfigurationValue"
	PropSCSIType      = "type" // SCSI device: peripheral device type
	PropSCSIVendor    = "vendor"
	PropSCSIModel     = "model"
	PropSCSIRevision  = "revision"
	PropHCTL          = "hctl"
	PropSG            = "sg" // SCSI device: /dev/sgN, absent without the sg driver
)

// MessageDeviceChanged is sent (MessageClients) to the drivers of a nub
// whose device reported a change: a change, bind, unbind, online or
// offline uevent, or a duplicate add. Data is the Event.
const MessageDeviceChanged = driver.MessageDriverDefined + 0x4850

// BridgeConfig configures a Bridge.
type BridgeConfig struct {
	// SysfsRoot is where attributes missing from uevents (USB strings,
	// SCSI INQUIRY strings, sg nodes) are read; "" means /sys. With a
	// simulator, its SimConfig.SysfsDir.
	SysfsRoot string
	Logger    *slog.Logger // nil: slog.Default()
}

// BridgeStats counts what the bridge did with the events it was given.
type BridgeStats struct {
	Events         uint64 // handled
	Published      uint64 // nubs published (or queued for publishing)
	Terminated     uint64 // nubs terminated because their device left
	Changed        uint64 // change messages sent (change events and duplicate adds)
	Replaced       uint64 // adds at a known path with another identity: old nub terminated first
	UnknownRemoves uint64 // removes of a USB device/interface or SCSI device never seen
	LateRemoves    uint64 // removes of devices already gone with their parent
	Dropped        uint64 // nubs whose device (or parent) left before their turn to be published
	PublishErrors  uint64 // publishes refused otherwise (registry closed)
	Ignored        uint64 // events of devices the bridge does not publish
}

type bridgeStats struct {
	events, published, terminated, changed, replaced, unknownRemoves, lateRemoves, dropped, publishErrors, ignored atomic.Uint64
}

// bridgeTag is the tag of the bridge's reference on each nub it follows.
type bridgeTag struct{}

func (bridgeTag) String() string { return "hotplug bridge" }

// publishTag is the tag of the references a queued publish holds on its
// nub and provider, so neither is freed before Publish has seen it.
type publishTag struct{}

func (publishTag) String() string { return "hotplug publish queue" }

type nubEntry struct {
	svc      *driver.Service
	held     atomic.Bool // the bridge's reference on svc is still held
	ev       Event       // the add it was published for
	hasSG    bool
	isLUN    bool
	identity string
}

type publishJob struct {
	provider, nub *driver.Service
	flush         chan struct{} // a Flush mark instead of a nub
	label         string        // the event's Label: matching runs under it
}

// Bridge turns device events into registry operations: an add publishes a
// nub (USBDevice; USBInterface as a client of its device; SCSIDevice as a
// client of the nearest published ancestor, e.g. the USB interface of a
// stick), a remove terminates it and everything under its path (surprise
// removal, even when the children's removes arrive later or never), a
// duplicate add or a change is a MessageDeviceChanged to its drivers.
//
// Handle is for one goroutine (Run is that loop). Publishing — which runs
// matching and the drivers' Start — happens in order on a publisher
// goroutine, so a slow Start never delays a remove: the remove terminates
// the nub during its Start, whose context is then cancelled.
type Bridge struct {
	r   *driver.Registry
	cfg BridgeConfig
	log *slog.Logger
	st  bridgeStats

	// Owned by the Handle goroutine.
	nubs    map[string]*nubEntry // by DEVPATH
	gone    map[string]bool      // children terminated with their parent, remove not seen yet
	pending map[string]Event     // SCSI devices waiting for their sg node

	qmu     sync.Mutex
	queue   []publishJob
	wake    chan struct{}
	closing bool
	done    chan struct{}
	closed  atomic.Bool
}

// NewBridge starts a bridge into r. Close it.
func NewBridge(r *driver.Registry, cfg BridgeConfig) *Bridge {
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = DefaultSysfsRoot
	}
	b := &Bridge{r: r, cfg: cfg, log: cfg.Logger,
		nubs: map[string]*nubEntry{}, gone: map[string]bool{}, pending: map[string]Event{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	if b.log == nil {
		b.log = slog.Default()
	}
	go b.publisher()
	return b
}

// Stats returns the counters.
func (b *Bridge) Stats() BridgeStats {
	s := &b.st
	return BridgeStats{Events: s.events.Load(), Published: s.published.Load(), Terminated: s.terminated.Load(),
		Changed: s.changed.Load(), Replaced: s.replaced.Load(), UnknownRemoves: s.unknownRemoves.Load(),
		LateRemoves: s.lateRemoves.Load(), Dropped: s.dropped.Load(), PublishErrors: s.publishErrors.Load(), Ignored: s.ignored.Load()}
}

// Run handles the events of src until it ends: nil at io.EOF, otherwise
// the error of src.Next (ctx's error, ErrClosed, ...).
func (b *Bridge) Run(ctx context.Context, src Source) error {
	for {
		ev, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b.Handle(ev)
	}
}

// Handle applies one event. It never blocks on drivers. The nubs it
// creates, and the drivers matched to them, carry the event's Label.
func (b *Bridge) Handle(ev Event) {
	if ev.Label != "" {
		refcount.DoLabel(ev.Label, func() { b.handle(ev) })
		return
	}
	b.handle(ev)
}

func (b *Bridge) handle(ev Event) {
	if b.closed.Load() {
		return
	}
	b.st.events.Add(1)
	kind := nubKind(&ev)
	switch ev.Action {
	case ActionAdd:
		switch {
		case kind != "":
			b.add(ev, kind)
		case ev.Subsystem == "scsi_generic":
			b.sgAdded(ev)
		default:
			b.st.ignored.Add(1)
		}
	case ActionRemove:
		b.remove(ev.DevPath, kind != "")
	case ActionMove:
		if old := ev.Get("DEVPATH_OLD"); old != "" {
			b.remove(old, false)
		}
		if kind != "" {
			b.add(ev, kind)
		} else {
			b.st.ignored.Add(1)
		}
	default: // change, bind, unbind, online, offline
		if l, ok := b.pending[ev.DevPath]; ok && ev.Action == ActionBind {
			// The LUN's driver bound and no sg node came: the sg driver is
			// not loaded. Publish without one.
			delete(b.pending, ev.DevPath)
			b.publishNew(l, ClassSCSIDevice, "")
			return
		}
		if e, ok := b.nubs[ev.DevPath]; ok {
			b.changed(e, ev)
		} else {
			b.st.ignored.Add(1)
		}
	}
}

// nubKind returns the class of the nub an event's device gets, or "".
func nubKind(ev *Event) string {
	switch {
	case ev.Subsystem == "usb" && ev.DevType == "usb_device":
		return ClassUSBDevice
	case ev.Subsystem == "usb" && ev.DevType == "usb_interface":
		return ClassUSBInterface
	case ev.Subsystem == "scsi" && ev.DevType == "scsi_device":
		return ClassSCSIDevice
	}
	return ""
}

func (b *Bridge) changed(e *nubEntry, ev Event) {
	b.st.changed.Add(1)
	// The nub may have been terminated and freed by someone else.
	if s, release, ok := b.r.Lookup(e.svc.ID()); ok {
		s.MessageClients(MessageDeviceChanged, ev)
		release()
	}
}

// release drops the bridge's reference on e's nub, once.
func (e *nubEntry) release() bool {
	if e.held.CompareAndSwap(true, false) {
		e.svc.TaggedRelease(bridgeTag{})
		return true
	}
	return false
}

func (b *Bridge) add(ev Event, kind string) {
	delete(b.gone, ev.DevPath)
	if e, ok := b.nubs[ev.DevPath]; ok {
		if e.identity == identity(&ev) {
			b.changed(e, ev) // a duplicate add (coldplug overlap, resync)
			return
		}
		// Another device at the same path: the remove was lost.
		b.st.replaced.Add(1)
		b.remove(ev.DevPath, true)
	}
	if _, ok := b.pending[ev.DevPath]; ok {
		b.pending[ev.DevPath] = ev
		b.st.changed.Add(1)
		return
	}
	sg := ""
	if kind == ClassSCSIDevice {
		var ok bool
		if sg, ok = b.findSG(ev.DevPath); !ok {
			// Publish when the sg node arrives (or the LUN binds).
			b.pending[ev.DevPath] = ev
			return
		}
	}
	b.publishNew(ev, kind, sg)
}

// findSG looks for the LUN's sg node in sysfs.
func (b *Bridge) findSG(devpath string) (string, bool) {
	ents, err := os.ReadDir(filepath.Join(b.cfg.SysfsRoot, devpath, "scsi_generic"))
	if err != nil || len(ents) == 0 {
		return "", false
	}
	return "/dev/" + ents[0].Name(), true
}

func (b *Bridge) sgAdded(ev Event) {
	g, err := ev.SCSIGeneric()
	if err != nil {
		b.st.ignored.Add(1)
		return
	}
	if l, ok := b.pending[g.DevicePath]; ok {
		delete(b.pending, g.DevicePath)
		b.publishNew(l, ClassSCSIDevice, g.DevNode)
		return
	}
	if e, ok := b.nubs[g.DevicePath]; ok && !e.hasSG {
		b.changed(e, ev) // published without it; tell its drivers
		return
	}
	b.st.ignored.Add(1)
}

// publishNew creates the nub and queues its publication under the nearest
// followed ancestor.
func (b *Bridge) publishNew(ev Event, kind, sg string) {
	props, name, err := b.properties(ev, kind, sg)
	if err != nil {
		b.log.Warn("hotplug: device not published", "devpath", ev.DevPath, "err", err)
		b.st.ignored.Add(1)
		return
	}
	var provider *driver.Service
	for p := parentPath(ev.DevPath); p != ""; p = parentPath(p) {
		if e, ok := b.nubs[p]; ok {
			s, release, ok := b.r.Lookup(e.svc.ID())
			if !ok {
				// The ancestor was terminated elsewhere and is gone: so
				// are its children.
				b.st.dropped.Add(1)
				return
			}
			provider = s
			provider.TaggedRetain(publishTag{})
			release()
			break
		}
	}
	nub := b.r.NewNub(kind, name, props)
	e := &nubEntry{svc: nub, ev: ev, hasSG: sg != "", isLUN: kind == ClassSCSIDevice, identity: identity(&ev)}
	e.held.Store(true)
	nub.TaggedRetain(bridgeTag{})
	// Whoever terminates the nub (drvctl terminate, a failed publication,
	// a cascade), the bridge lets go then, not at the device's remove.
	nub.AddInterest(func(m driver.Message) {
		if m.Type == driver.ServiceIsTerminated && m.From == nub.ID() {
			e.release()
		}
	})
	b.nubs[ev.DevPath] = e
	b.st.published.Add(1)
	nub.TaggedRetain(publishTag{})
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		b.finishJob(publishJob{provider: provider, nub: nub}, false)
		return
	}
	b.queue = append(b.queue, publishJob{provider: provider, nub: nub, label: ev.Label})
	b.qmu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func parentPath(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// properties builds the nub's properties from the event and sysfs.
func (b *Bridge) properties(ev Event, kind, sg string) (driver.Properties, string, error) {
	m := map[string]any{PropDevPath: ev.DevPath}
	var name string
	switch kind {
	case ClassUSBDevice:
		d, err := ev.USBDevice()
		if err != nil {
			return driver.Properties{}, "", err
		}
		_ = d.ReadAttrs(b.cfg.SysfsRoot, ev.DevPath) // strings are optional
		name = d.Port
		for k, v := range map[string]uint64{PropVendorID: uint64(d.Vendor), PropProductID: uint64(d.Product),
			PropBcdDevice: uint64(d.BcdDevice), PropDeviceClass: uint64(d.Class), PropDeviceSub: uint64(d.SubClass),
			PropDeviceProto: uint64(d.Protocol), PropBusNum: uint64(d.BusNum), PropDevNum: uint64(d.DevNum)} {
			m[k] = v
		}
		m[PropPort] = d.Port
		if d.DevName != "" {
			m[PropDevNode] = "/dev/" + d.DevName
		}
		for k, v := range map[string]string{PropManufacturer: d.Manufacturer, PropProduct: d.ProductName, PropSerial: d.Serial} {
			if v != "" {
				m[k] = v
			}
		}
	case ClassUSBInterface:
		in, err := ev.USBInterface()
		if err != nil {
			return driver.Properties{}, "", err
		}
		name = in.Name
		for k, v := range map[string]uint64{PropVendorID: uint64(in.Vendor), PropProductID: uint64(in.Product),
			PropIfaceNumber: uint64(in.Number), PropIfaceClass: uint64(in.Class), PropIfaceSub: uint64(in.SubClass),
			PropIfaceProto: uint64(in.Protocol), PropConfiguration: uint64(in.Configuration)} {
			m[k] = v
		}
	case ClassSCSIDevice:
		d, err := ev.SCSIDevice()
		if err != nil {
			return driver.Properties{}, "", err
		}
		_ = d.ReadAttrs(b.cfg.SysfsRoot, ev.DevPath)
		name = d.HCTL.String()
		m[PropHCTL] = name
		if d.Type >= 0 {
			m[PropSCSIType] = uint64(d.Type)
		}
		for k, v := range map[string]string{PropSCSIVendor: d.Vendor, PropSCSIModel: d.Model, PropSCSIRevision: d.Revision, PropSG: sg} {
			if v != "" {
				m[k] = v
			}
		}
	}
	return driver.NewProperties(m), name, nil
}

// remove terminates the nub at devpath and every followed nub under it,
// deepest first.
func (b *Bridge) remove(devpath string, followedKind bool) {
	prefix := devpath + "/"
	var hit []string
	for p := range b.nubs {
		if p == devpath || strings.HasPrefix(p, prefix) {
			hit = append(hit, p)
		}
	}
	dropped := 0
	for p := range b.pending {
		if p == devpath || strings.HasPrefix(p, prefix) {
			delete(b.pending, p) // never published: nothing to terminate
			dropped++
		}
	}
	if len(hit) == 0 && dropped == 0 {
		switch {
		case b.gone[devpath]:
			delete(b.gone, devpath)
			b.st.lateRemoves.Add(1)
		case followedKind:
			b.st.unknownRemoves.Add(1)
		default:
			b.st.ignored.Add(1)
		}
		return
	}
	// Deepest first: children are terminated before their parents, so a
	// cascade never reaches a nub we still have to release.
	sortDeepestFirst(hit)
	for _, p := range hit {
		e := b.nubs[p]
		delete(b.nubs, p)
		if p != devpath {
			b.gone[p] = true
		}
		if e.held.CompareAndSwap(true, false) { // not terminated elsewhere
			// A remove, a move away or another device at the path: the
			// device this nub stood for is gone.
			e.svc.TerminateWith(driver.CauseUnplug)
			e.svc.TaggedRelease(bridgeTag{})
		}
		b.st.terminated.Add(1)
	}
}

func sortDeepestFirst(ps []string) {
	evs := make([]Event, len(ps))
	for i, p := range ps {
		evs[i].DevPath = p
	}
	sortParentsFirst(evs)
	for i := range evs {
		ps[len(ps)-1-i] = evs[i].DevPath
	}
}

// publisher publishes queued nubs in order.
func (b *Bridge) publisher() {
	defer close(b.done)
	for {
		b.qmu.Lock()
		for len(b.queue) == 0 && !b.closing {
			b.qmu.Unlock()
			<-b.wake
			b.qmu.Lock()
		}
		if len(b.queue) == 0 && b.closing {
			b.qmu.Unlock()
			return
		}
		j := b.queue[0]
		b.queue[0] = publishJob{}
		b.queue = b.queue[1:]
		closing := b.closing
		b.qmu.Unlock()
		if j.flush != nil {
			close(j.flush)
			continue
		}
		refcount.DoLabel(j.label, func() { b.finishJob(j, !closing) })
	}
}

// finishJob publishes (or, when closing, drops) a queued nub and releases
// the queue's references.
func (b *Bridge) finishJob(j publishJob, publish bool) {
	err := driver.ErrClosed
	if publish {
		err = b.r.Publish(j.provider, j.nub)
	}
	if err != nil {
		if errors.Is(err, driver.ErrNotActive) {
			b.st.dropped.Add(1)
		} else {
			if !errors.Is(err, driver.ErrClosed) {
				b.log.Warn("hotplug: publish failed", "nub", j.nub.String(), "err", err)
			}
			b.st.publishErrors.Add(1)
		}
		// Never registered, or its provider left meanwhile: it goes now.
		j.nub.Terminate()
	}
	j.nub.TaggedRelease(publishTag{})
	if j.provider != nil {
		j.provider.TaggedRelease(publishTag{})
	}
}

// Close stops the bridge: queued publications are dropped (their nubs
// terminated), the publisher ends, and the bridge releases its references.
// Published nubs stay in the registry (Registry.Close terminates them).
// Call it after the Handle/Run goroutine has returned.
func (b *Bridge) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.qmu.Lock()
	b.closing = true
	b.qmu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.done
	for p, e := range b.nubs {
		e.release()
		delete(b.nubs, p)
	}
	return nil
}

// Flush waits until every publication queued so far is done (drivers
// started or failed), so the registry reflects every event handled.
func (b *Bridge) Flush(ctx context.Context) error {
	mark := make(chan struct{})
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ErrClosed
	}
	b.queue = append(b.queue, publishJob{flush: mark})
	b.qmu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case <-mark:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package hotplug

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/refcount"
)

// MessageDeviceChanged is sent (MessageClients) to the drivers of a nub
// whose device reported a change: a change, bind, unbind, online or
// offline uevent, or a duplicate add. Data is the Event.
const MessageDeviceChanged = driver.MessageDriverDefined + 0x4850

// BridgeConfig configures a Bridge.
type BridgeConfig struct {
	// Buses are the kinds of device the bridge publishes (required:
	// hotplug/buses.Default() for USB, SCSI and HID). Events of other
	// devices are ignored.
	Buses []Bus
	// SysfsRoot is where attributes missing from uevents (USB strings,
	// SCSI INQUIRY strings, sg nodes) are read; "" means /sys. With a
	// simulator, its sysfs mirror.
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
	UnknownRemoves uint64 // removes of a device that gets a nub, never seen
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
	svc        *driver.Service
	held       atomic.Bool // the bridge's reference on svc is still held
	bus        Bus
	ev         Event   // the add it was published for
	companions []Event // companion adds it was described with or saw since
	identity   string
}

// pendingDev is a device waiting for a companion before its nub can be
// described.
type pendingDev struct {
	bus        Bus
	ev         Event
	companions []Event
}

type publishJob struct {
	provider, nub *driver.Service
	flush         chan struct{} // a Flush mark instead of a nub
	label         string        // the event's Label: matching runs under it
}

// Bridge turns device events into registry operations: an add publishes a
// nub as its Bus describes it (USBDevice; USBInterface as a client of its
// device; SCSIDevice as a client of the nearest published ancestor, e.g.
// the USB interface of a stick), a remove terminates it and everything under its path (surprise
// removal, even when the children's removes arrive later or never), a
// duplicate add or a change is a MessageDeviceChanged to its drivers.
//
// Handle is for one goroutine (Run is that loop). Publishing — which runs
// matching and the drivers' Start — happens in order on a publisher
// goroutine, so a slow Start never delays a remove: the remove terminates
// the nub during its Start, whose context is then cancelled.
type Bridge struct {
	r     *driver.Registry
	cfg   BridgeConfig
	buses *busSet
	log   *slog.Logger
	st    bridgeStats

	// Owned by the Handle goroutine.
	nubs    map[string]*nubEntry   // by DEVPATH
	gone    map[string]bool        // children terminated with their parent, remove not seen yet
	pending map[string]*pendingDev // devices waiting for a companion (a LUN for its sg node)
	tree    devTree                // the paths of nubs and pending, by parent: removes walk down from a path
	// Scratch for the interface calls Bus.Match and Bus.Describe, whose
	// pointer arguments would otherwise move each event to the heap.
	cur  Event
	info DeviceInfo

	qmu     sync.Mutex
	queue   []publishJob
	wake    chan struct{}
	closing bool
	done    chan struct{}
	closed  atomic.Bool
}

// NewBridge starts a bridge into r. Close it. It panics when cfg.Buses is
// nil or names a bus twice: a bridge that silently publishes nothing is a
// wiring mistake (an empty, non-nil Buses is allowed).
func NewBridge(r *driver.Registry, cfg BridgeConfig) *Bridge {
	if cfg.Buses == nil {
		panic("hotplug: NewBridge: BridgeConfig.Buses is nil (use hotplug/buses.Default())")
	}
	set, err := newBusSet(cfg.Buses)
	if err != nil {
		panic("hotplug: NewBridge: " + err.Error())
	}
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = DefaultSysfsRoot
	}
	b := &Bridge{r: r, cfg: cfg, buses: set, log: cfg.Logger,
		nubs: map[string]*nubEntry{}, gone: map[string]bool{}, pending: map[string]*pendingDev{},
		tree: newDevTree(), wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	b.cur = ev
	bus, role := b.buses.match(&b.cur)
	b.cur = Event{}
	switch ev.Action {
	case ActionAdd:
		switch {
		case role.Nub:
			b.add(ev, bus)
		case role.Owner != "":
			b.companion(ev, role.Owner)
		default:
			b.st.ignored.Add(1)
		}
	case ActionRemove:
		b.remove(ev.DevPath, role.Nub)
	case ActionMove:
		if old := ev.Get("DEVPATH_OLD"); old != "" {
			b.remove(old, false)
		}
		if role.Nub {
			b.add(ev, bus)
		} else {
			b.st.ignored.Add(1)
		}
	default: // change, bind, unbind, online, offline
		if p, ok := b.pending[ev.DevPath]; ok && ev.Action == ActionBind {
			// The device's driver bound and its companion did not come
			// (the sg driver is not loaded): publish without it.
			b.dropPending(ev.DevPath)
			b.describe(p, true)
			return
		}
		if e, ok := b.nubs[ev.DevPath]; ok {
			b.changed(e, ev)
		} else {
			b.st.ignored.Add(1)
		}
	}
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

func (b *Bridge) add(ev Event, bus Bus) {
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
	if p, ok := b.pending[ev.DevPath]; ok {
		p.ev = ev
		b.st.changed.Add(1)
		return
	}
	// An add that reports a bound driver (coldplug, resync) comes after
	// the companions the driver creates: none is coming later.
	b.describe(&pendingDev{bus: bus, ev: ev}, ev.Driver != "")
}

// companion handles the add of a device that completes another (an sg
// node, a hidraw node).
func (b *Bridge) companion(ev Event, owner string) {
	if p, ok := b.pending[owner]; ok {
		b.dropPending(owner)
		p.companions = append(p.companions, ev)
		b.describe(p, false)
		return
	}
	if e, ok := b.nubs[owner]; ok {
		// Published without it, or a duplicate: a change if the nub would
		// now be described otherwise.
		comps := append(slices.Clip(e.companions), ev)
		nub, err := e.bus.Describe(&DeviceInfo{Event: e.ev, Companions: comps, SysfsRoot: b.cfg.SysfsRoot, Final: true})
		if err == nil && !reflect.DeepEqual(nubProperties(e.ev, nub).Map(), e.svc.Properties().Map()) {
			e.companions = comps
			b.changed(e, ev)
			return
		}
	}
	b.st.ignored.Add(1)
}

// describe asks the device's bus for its nub and publishes it, or keeps
// the device pending until a companion arrives.
func (b *Bridge) describe(p *pendingDev, final bool) {
	b.info = DeviceInfo{Event: p.ev, Companions: p.companions, SysfsRoot: b.cfg.SysfsRoot, Final: final}
	nub, err := p.bus.Describe(&b.info)
	b.info = DeviceInfo{}
	if errors.Is(err, ErrIncomplete) && !final {
		b.pending[p.ev.DevPath] = p
		b.tree.add(p.ev.DevPath)
		return
	}
	if err != nil {
		b.log.Warn("device not published", "bus", p.bus.Name(), "devpath", p.ev.DevPath, "err", err)
		b.st.ignored.Add(1)
		return
	}
	b.publishNew(p, nub)
}

func nubProperties(ev Event, nub Nub) driver.Properties {
	// The adapter's map is the bridge's once Describe returned it, and
	// NewProperties copies it anyway: no second copy here.
	m := nub.Properties
	if m == nil {
		m = make(map[string]any, 1)
	}
	m[PropDevPath] = ev.DevPath
	return driver.NewProperties(m)
}

// publishNew creates the nub and queues its publication under the nearest
// followed ancestor.
func (b *Bridge) publishNew(p *pendingDev, desc Nub) {
	ev := p.ev
	var provider *driver.Service
	start := desc.Provider
	if start == "" {
		start = parentPath(ev.DevPath)
	}
	for p := start; p != ""; p = parentPath(p) {
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
	nub := b.r.NewNub(desc.Class, desc.Name, nubProperties(ev, desc))
	e := &nubEntry{svc: nub, bus: p.bus, ev: ev, companions: p.companions, identity: identity(&ev)}
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
	b.tree.add(ev.DevPath)
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

// known reports whether the bridge holds a nub or a pending device at p.
func (b *Bridge) known(p string) bool {
	if _, ok := b.nubs[p]; ok {
		return true
	}
	_, ok := b.pending[p]
	return ok
}

func (b *Bridge) dropPending(p string) {
	delete(b.pending, p)
	b.tree.drop(p, b.known)
}

// remove terminates the nub at devpath and every followed nub under it,
// deepest first. It walks the tree down from devpath: O(depth + what is
// under it), whatever the number of other devices.
func (b *Bridge) remove(devpath string, followedKind bool) {
	var hit, drop []string
	b.tree.under(devpath, func(p string) {
		if _, ok := b.nubs[p]; ok {
			hit = append(hit, p)
		} else if _, ok := b.pending[p]; ok {
			drop = append(drop, p)
		}
	})
	for _, p := range drop {
		b.dropPending(p) // never published: nothing to terminate
	}
	if len(hit) == 0 && len(drop) == 0 {
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
	if len(hit) > 1 {
		sortDeepestFirst(hit)
	}
	for _, p := range hit {
		e := b.nubs[p]
		delete(b.nubs, p)
		b.tree.drop(p, b.known)
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
	b.tree = newDevTree()
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

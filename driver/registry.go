package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/refcount"
)

// Lock order (acquire top to bottom, never upward):
//
//	Service.matchMu   one matching run per nub
//	Service.cb        callback serialization; registry code holds at most one
//	Registry.mu       the graph: edges, flags, open sets, live set
//	Service.mu, workQueue.mu, Registry.ev.mu, refcount internals   (leaves)
//
// Driver code is never called with Registry.mu, Service.mu or a queue lock
// held. A reference is never released with Registry.mu held, because the
// release may free the object and the free takes Registry.mu.

// Driver is what a driver author implements. Start runs when the driver is
// matched to a nub (ctx is cancelled if the nub is terminated meanwhile);
// Stop runs once during termination, after the service's jobs are drained
// and before its managed resources are released.
type Driver interface {
	Start(ctx context.Context, s *Service) error
	Stop(s *Service)
}

// Prober is implemented by a driver that checks the device before it is
// started. ok false rejects the match; score replaces the personality's.
type Prober interface {
	Probe(ctx context.Context, s *Service) (score int, ok bool)
}

// WillTerminater is called in phase 2, root to leaf.
type WillTerminater interface {
	WillTerminate(s *Service)
}

// DidTerminater is called in phase 2, leaf to root, once no client has the
// service open.
type DidTerminater interface {
	DidTerminate(s *Service)
}

// MessageHandler receives messages from the service's providers:
// ServiceIsTerminated, ServiceIsRequestingClose (close the provider: the
// provider's termination waits for it), ServiceIsAttemptingOpen and
// driver-defined ones. A client without a MessageHandler is closed for it
// when its provider requests close.
type MessageHandler interface {
	Message(s *Service, m Message) error
}

// InlineMessageHandler is a MessageHandler that may be called on the
// sender's goroutine: its Message neither blocks nor calls into the
// registry or into any driver (it queues or writes what it is given and
// returns, as a user client forwarding notifications to a socket does).
// MessageClients delivers to such a client in turn on the sender's
// goroutine, as IOKit's messageClients does, when nothing is queued for
// it: a fan-out to a thousand clients then runs on one core and leaves
// the others to whoever reads what it sends, instead of keeping them all
// busy with the mail pool's workers. The guarantees do not change:
// messages to one client are delivered in order, one at a time, under its
// callback lock, never after its Stop.
type InlineMessageHandler interface {
	MessageHandler
	// MessageInline marks the promise; it is never called.
	MessageInline()
}

// MessagePrefetcher is an InlineMessageHandler that can load what its
// Message will touch ahead of it. A fan-out calls PrefetchMessage for up
// to 64 clients in a row, then delivers to them: the loads of different
// clients overlap, where the deliveries (which take locks) would miss on
// each client's memory in turn. PrefetchMessage must not lock, block or
// write; it reads fields that do not change (or atomically) and returns
// anything computed from them, which is thrown away.
type MessagePrefetcher interface {
	InlineMessageHandler
	PrefetchMessage() uintptr
}

// Method is a named operation a user client calls on a driver.
type Method func(ctx context.Context, s *Service, in []byte) ([]byte, error)

// ClientMethods is implemented by a driver that user clients can call.
type ClientMethods interface {
	Methods() map[string]Method
}

// Personality says which nubs a driver matches and how to make an instance.
type Personality struct {
	Name          string  // the driver's name (Unload uses it)
	Class         string  // class of the driver instance service
	ProviderClass string  // class of the nubs it matches; "" matches any
	Match         []Match // all must match
	Score         int     // higher wins within a Category; Probe may change it
	Category      string  // one driver per category per nub
	New           func() Driver
}

// Option configures a Registry.
type Option func(*Registry)

// WithLogger sets the logger for recovered panics and failures.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithJobConcurrency bounds how many jobs of one service run at once
// (default 4).
func WithJobConcurrency(n int) Option {
	return func(r *Registry) {
		if n > 0 {
			r.jobLimit = n
		}
	}
}

// Registry is the graph of services with its matching and its termination
// worker.
type Registry struct {
	log      *slog.Logger
	jobLimit int

	mu         sync.Mutex
	root       *Service
	closed     bool
	workerGone bool // the termination worker exited
	// A service leaves live before its free is announced (whoever hears
	// the free no longer finds it); announcing is closed when the last
	// such announcement in flight is made, nil when none is: Close and
	// WaitQuiet wait for it, or a trace read after them lacks a free.
	announcing chan struct{}
	inFlight   int
	pers       []*Personality
	live       liveSet // every service not yet freed; Service.listed says whether the registry's reference is still held

	ev   events
	mail mailPool

	// termination worker
	wmu     sync.Mutex
	batches []*batch
	kickc   chan struct{}
	wdone   chan struct{}
	closing atomic.Bool
}

// The framework's own references use tags private to this package, so
// that a driver's own tag — its service, a provider, any pointer — never
// pairs with one of them: a driver's `provider.TaggedRetain(self)` is
// released only by the driver's `provider.TaggedRelease(self)`.

// registryTag is the registry's reference on every listed service: the
// registry plane, structural.
type registryTag struct{}

func (registryTag) String() string { return "registry" }
func (registryTag) StructuralRef() {}

// clientLink tags the reference an attached client holds on its provider;
// providerLink the one the provider holds on the client. Both are
// structural: the attachment records the graph, it does not use the other
// side (an open does: openLink).
type clientLink struct{ c *Service }

func (l clientLink) RefObject() *refcount.Object { return &l.c.ref }
func (l clientLink) String() string              { return "client " + l.c.ref.String() }
func (clientLink) StructuralRef()                {}

type providerLink struct{ p *Service }

func (l providerLink) RefObject() *refcount.Object { return &l.p.ref }
func (l providerLink) String() string              { return "provider " + l.p.ref.String() }
func (providerLink) StructuralRef()                {}

// openLink tags the reference a client holds on a provider it has open:
// an owning reference, which WhyAlive follows from the provider to the
// client (and on to whoever holds the client, such as an application).
type openLink struct{ c *Service }

func (l openLink) RefObject() *refcount.Object { return &l.c.ref }

var (
	_ refcount.Structural = registryTag{}
	_ refcount.Structural = clientLink{}
	_ refcount.Structural = providerLink{}
	_ refcount.Owner      = openLink{}
)

// NewRegistry returns a registry with its root published and its
// termination worker running. Close it.
func NewRegistry(opts ...Option) *Registry {
	r := &Registry{
		log: slog.Default(), jobLimit: 4,
		kickc: make(chan struct{}, 1), wdone: make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	r.mail.max = 4 * runtime.GOMAXPROCS(0)
	r.root = r.newService("Root", "root", Properties{}, kindRoot, nil, nil)
	r.mu.Lock()
	r.root.registered = true
	r.root.started.Store(true)
	r.mu.Unlock()
	go r.worker()
	return r
}

// Root is the registry's root service; bus nubs hang under it.
func (r *Registry) Root() *Service { return r.root }

func (r *Registry) newService(class, name string, props Properties, k kind, impl any, p *Personality) *Service {
	s := &Service{reg: r, name: name, props: props, kind: k, impl: impl, pers: p,
		active: true}
	s.ref.Init(class, func() { r.freed(s) })
	// The creator's reference becomes the registry's own, tagged.
	s.TaggedRetain(registryTag{})
	s.ref.Release()
	r.mu.Lock()
	if r.workerGone {
		r.mu.Unlock()
		s.stillborn(true)
		return s
	}
	r.live.add(s)
	s.listed = true
	late := r.closed && k == kindNub
	r.mu.Unlock()
	if late {
		r.terminate(s, CauseShutdown) // Close raced with NewNub: nothing may outlive the registry
	}
	return s
}

func (r *Registry) freed(s *Service) {
	if s.unborn {
		s.markFreed()
		return
	}
	_ = faultinject.At(faultinject.Free, s)
	// Unlisted before the free is announced, so whoever hears it no longer
	// finds the service in Services().
	r.mu.Lock()
	r.live.remove(s)
	var b *batch
	if s.term != nil {
		b = s.term.b
	}
	if r.inFlight == 0 {
		r.announcing = make(chan struct{})
	}
	r.inFlight++
	r.mu.Unlock()
	if h := testAnnounceHook.Load(); h != nil {
		(*h)(s)
	}
	r.emit(s, StepFree, nil, 0, nil)
	s.markFreed()
	if b != nil {
		b.freedOne()
	}
	r.mu.Lock()
	if r.inFlight--; r.inFlight == 0 {
		close(r.announcing)
		r.announcing = nil
	}
	r.mu.Unlock()
	r.kick()
}

// testAnnounceHook, set by tests only, runs between a service's unlisting
// and the announcement of its free: the window Close and WaitQuiet must
// wait out.
var testAnnounceHook atomic.Pointer[func(*Service)]

// announced waits until no free is being announced.
func (r *Registry) announced(ctx context.Context) error {
	r.mu.Lock()
	ch := r.announcing
	r.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewNub creates an unpublished nub. Publish it, or Terminate it. On a
// closed registry the nub is born terminated and freed (Publish fails with
// ErrClosed), so that nothing outlives the registry.
func (r *Registry) NewNub(class, name string, props Properties) *Service {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		s := &Service{reg: r, name: name, props: props, kind: kindNub}
		s.ref.Init(class, func() { r.freed(s) })
		s.stillborn(false)
		return s
	}
	return r.newService(class, name, props, kindNub, nil, nil)
}

// stillborn turns a service made after the registry closed into one that
// is already terminated and freed: it emits no events, Publish refuses it,
// Terminate is a no-op.
func (s *Service) stillborn(tagged bool) {
	s.unborn = true
	s.active = false
	s.stopped.Store(true)
	s.registryLetGo() // no mailbox runs yet: this only records it
	if tagged {
		s.TaggedRelease(registryTag{})
	} else {
		s.ref.Release()
	}
}

// Lookup returns the live service with that ID with a reference taken for
// the caller, who must call release.
func (r *Registry) Lookup(id uint64) (s *Service, release func(), ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s = r.live.lookup(id)
	if s == nil || !s.listed {
		return nil, nil, false
	}
	tag := &lookupTag{}
	s.TaggedRetain(tag)
	var once sync.Once
	return s, func() { once.Do(func() { s.TaggedRelease(tag) }) }, true
}

type lookupTag struct{ _ byte }

func (*lookupTag) String() string { return "lookup" }

// Services returns every service not yet freed (including terminated ones
// still held), ordered by ID. The pointers are for inspection; take a
// reference with Lookup to use one.
func (r *Registry) Services() []*Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live.appendTo(make([]*Service, 0, r.live.n), nil)
}

// LeakSuspects returns what a leak report lists: every live traced object
// (refcount.LiveObjects) except r's active services, which are alive by
// right. Ordered by ID.
func (r *Registry) LeakSuspects() []*refcount.Object {
	r.mu.Lock()
	active := make(map[uint64]bool, r.live.n)
	r.live.appendTo(nil, func(s *Service) bool {
		if s.active {
			active[s.ID()] = true
		}
		return false
	})
	r.mu.Unlock()
	objs := refcount.LiveObjects()
	kept := objs[:0]
	for _, o := range objs {
		if !active[o.ID()] {
			kept = append(kept, o)
		}
	}
	return kept
}

// attachLocked makes c a client of p, a reference each way.
func (r *Registry) attachLocked(c, p *Service) {
	c.providers = append(c.providers, p)
	if p.clients == nil {
		p.clients = map[*Service]struct{}{}
	}
	p.clients[c] = struct{}{}
	p.TaggedRetain(clientLink{c})   // c holds its provider
	c.TaggedRetain(providerLink{p}) // p holds its client
	r.emit(c, StepAttach, p, 0, nil)
}

// Publish attaches nub to provider (nil: the root) and runs matching on it:
// candidates are attached, probed and the best per category started. It
// returns once matching is done; a driver that fails to start is not an
// error of Publish (it is logged, and visible as a start event).
func (r *Registry) Publish(provider, nub *Service) error {
	if provider == nil {
		provider = r.root
	}
	if err := faultinject.At(faultinject.Publish, nub); err != nil {
		return opErr("publish", nub, err)
	}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return opErr("publish", nub, ErrClosed)
	case nub.registered:
		r.mu.Unlock()
		return opErr("publish", nub, ErrPublished)
	case !nub.active:
		r.mu.Unlock()
		return opErr("publish", nub, ErrNotActive)
	case !provider.active:
		r.mu.Unlock()
		return opErr("publish", nub, fmt.Errorf("provider %s: %w", provider.describe(), ErrNotActive))
	}
	nub.registered = true
	nub.started.Store(true)
	r.emit(nub, StepPublish, provider, 0, nil)
	r.attachLocked(nub, provider)
	r.mu.Unlock()
	r.match(nub)
	return nil
}

// AttachProvider adds provider as a further provider of s (a service with
// several providers survives until its last active provider terminates).
func (r *Registry) AttachProvider(s, provider *Service) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !s.active || !provider.active {
		return opErr("attach", s, ErrNotActive)
	}
	if s.attachedTo(provider) {
		return nil
	}
	r.attachLocked(s, provider)
	return nil
}

// AttachClient creates a user-client service attached as a client of
// provider, without matching. If handler implements Driver its Start runs
// now (an error terminates the client and is returned) and its Stop during
// termination; MessageHandler, WillTerminater, DidTerminater and
// ClientMethods apply as for drivers.
func (r *Registry) AttachClient(provider *Service, class, name string, handler any) (*Service, error) {
	return r.AttachClientWithProperties(provider, class, name, Properties{}, handler)
}

// AttachClientWithProperties is AttachClient with the client's property
// snapshot: who it serves (the server's user clients record the peer's
// pid, uid and command), shown by drvctl inspect.
func (r *Registry) AttachClientWithProperties(provider *Service, class, name string, props Properties, handler any) (*Service, error) {
	return r.attachClient(provider, class, name, props, handler, nil)
}

// AttachClientHeld is AttachClientWithProperties that also takes a
// reference on the new client for the caller, tagged tag, before the
// client can be reached by anything else: a termination of provider racing
// the attach can otherwise finish and free the client before the caller's
// own TaggedRetain (a retain after free). The caller releases tag when it
// is done with the client; on an error nothing is held.
func (r *Registry) AttachClientHeld(provider *Service, class, name string, props Properties, handler, tag any) (*Service, error) {
	if tag == nil {
		return nil, opErr("attach client", provider, errors.New("nil tag"))
	}
	return r.attachClient(provider, class, name, props, handler, tag)
}

func (r *Registry) attachClient(provider *Service, class, name string, props Properties, handler, tag any) (*Service, error) {
	r.mu.Lock()
	if r.closed || !provider.active {
		r.mu.Unlock()
		if r.closed {
			return nil, opErr("attach client", provider, ErrClosed)
		}
		return nil, opErr("attach client", provider, ErrNotActive)
	}
	r.mu.Unlock()
	c := r.newService(class, name, props, kindClient, handler, nil)
	if c.unborn {
		return nil, opErr("attach client", provider, ErrClosed)
	}
	r.mu.Lock()
	if !provider.active {
		r.mu.Unlock()
		c.Terminate()
		return nil, opErr("attach client", provider, ErrNotActive)
	}
	r.attachLocked(c, provider)
	if tag != nil {
		c.TaggedRetain(tag)
	}
	d, isDriver := handler.(Driver)
	if !isDriver {
		c.started.Store(true)
	}
	r.mu.Unlock()
	if isDriver {
		if err := c.start(d); err != nil {
			if tag != nil {
				c.TaggedRelease(tag)
			}
			return nil, opErr("attach client", c, err)
		}
	}
	return c, nil
}

// start runs d's Start on s; on failure s's managed resources are released
// at once and s is terminated.
func (s *Service) start(d Driver) error {
	r := s.reg
	ctx := s.Context()
	ran := false
	err := s.callbackThen("Start", func() error {
		r.mu.Lock()
		active := s.active
		r.mu.Unlock()
		if !active {
			return ErrNotActive // terminated before Start: never started, never stopped
		}
		ran = true
		if err := faultinject.At(faultinject.Start, s); err != nil {
			return err
		}
		err := d.Start(ctx, s)
		if err == nil {
			s.started.Store(true)
		}
		return err
	}, func(err error) {
		if ran {
			r.emit(s, StepStart, nil, 0, err)
		}
	})
	if err != nil {
		if ran {
			r.log.Warn("driver start failed", "service", s.describe(), "err", err)
		}
		s.releaseResources()
		s.Terminate()
	}
	return err
}

// RegisterPersonality adds p and runs matching on every published nub for
// the categories it has no driver in yet.
func (r *Registry) RegisterPersonality(p Personality) error {
	if p.Name == "" || p.New == nil {
		return &OpError{Op: "register personality", Err: errors.New("personality needs a Name and New")}
	}
	if p.Class == "" {
		p.Class = p.Name
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return &OpError{Op: "register personality", Err: ErrClosed}
	}
	pc := p
	r.pers = append(r.pers, &pc)
	nubs := r.live.appendTo(nil, func(s *Service) bool {
		return s.listed && s.kind != kindRoot && s.registered && s.active && (p.ProviderClass == "" || p.ProviderClass == s.Class())
	})
	r.mu.Unlock()
	for _, n := range nubs {
		r.match(n)
	}
	return nil
}

// Personalities returns copies of the registered personalities of driver
// name, in registration order.
func (r *Registry) Personalities(name string) []Personality {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Personality
	for _, p := range r.pers {
		if p.Name == name {
			out = append(out, *p)
		}
	}
	return out
}

// AllPersonalities returns copies of every registered personality, in
// registration order.
func (r *Registry) AllPersonalities() []Personality {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Personality, len(r.pers))
	for i, p := range r.pers {
		out[i] = *p
	}
	return out
}

// UnregisterPersonality removes every personality of driver name. Running
// instances are left alone (see Unload).
func (r *Registry) UnregisterPersonality(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.pers[:0:0]
	n := 0
	for _, p := range r.pers {
		if p.Name == name {
			n++
			continue
		}
		kept = append(kept, p)
	}
	r.pers = kept
	return n
}

func (s *Service) isActive() bool {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.active
}

func (p *Personality) matches(nub *Service) bool { return p.Matches(nub.Class(), nub.props) }

// Matches reports whether p matches a nub of class with props, as matching
// decides before probing: its ProviderClass and every Match. It needs no
// nub, so a component can ask ahead of publication (the daemon's USB hold
// decides before the kernel's drivers get an interface).
func (p *Personality) Matches(class string, props Properties) (ok bool) {
	if p.ProviderClass != "" && p.ProviderClass != class {
		return false
	}
	defer func() {
		if v := recover(); v != nil {
			ok = false
		}
	}()
	for _, m := range p.Match {
		if !m.matches(props) {
			return false
		}
	}
	return true
}

type matchTag struct{}

func (matchTag) String() string { return "matching" }

type candidate struct {
	p     *Personality
	inst  *Service
	score int
}

// match runs matching on nub for every category without a driver.
func (r *Registry) match(nub *Service) {
	nub.matchMu.Lock()
	defer nub.matchMu.Unlock()
	nub.busy.Add(1)
	defer nub.busy.Add(-1)

	r.mu.Lock()
	if !nub.active || r.closed {
		r.mu.Unlock()
		return
	}
	pers := append([]*Personality(nil), r.pers...)
	have := map[string]bool{}
	// A driver whose instance on this nub is still being torn down does
	// not get a second one beside it (its personality registered again
	// after a refused unload): two instances would own one device.
	tearing := map[string]bool{}
	for c := range nub.clients {
		if c.kind == kindDriver && c.pers != nil {
			if c.active {
				have[c.pers.Category] = true
			} else {
				tearing[c.pers.Name] = true
			}
		}
	}
	r.mu.Unlock()

	byCat := map[string][]*Personality{}
	var cats []string
	for _, p := range pers {
		if have[p.Category] || tearing[p.Name] || !p.matches(nub) {
			continue
		}
		if byCat[p.Category] == nil {
			cats = append(cats, p.Category)
		}
		byCat[p.Category] = append(byCat[p.Category], p)
	}
	sort.Strings(cats)
	for _, cat := range cats {
		ps := byCat[cat]
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].Score > ps[j].Score })
		if !r.matchCategory(nub, ps) {
			return // nub went away
		}
	}
}

func (r *Registry) matchCategory(nub *Service, ps []*Personality) bool {
	var probed []candidate
	for _, p := range ps {
		d, err := r.construct(p)
		if err != nil {
			r.log.Error("driver constructor failed", "driver", p.Name, "err", err)
			continue
		}
		inst := r.newService(p.Class, p.Name, nub.props, kindDriver, d, p)
		if inst.unborn {
			return false // the registry closed
		}
		// Matching keeps its own reference: the nub may be terminated and
		// the candidate finished by the worker while we still look at it.
		inst.TaggedRetain(matchTag{})
		defer inst.TaggedRelease(matchTag{})
		r.mu.Lock()
		if !nub.active {
			r.mu.Unlock()
			inst.Terminate()
			for _, c := range probed {
				c.inst.Terminate()
			}
			return false
		}
		r.attachLocked(inst, nub)
		r.mu.Unlock()
		c := candidate{p: p, inst: inst, score: p.Score}
		if pr, ok := d.(Prober); ok {
			var accepted, ran bool
			err := inst.callbackThen("Probe", func() error {
				if !inst.isActive() {
					return ErrNotActive
				}
				ran = true
				if err := faultinject.At(faultinject.Probe, inst); err != nil {
					return err
				}
				c.score, accepted = pr.Probe(inst.Context(), inst)
				if !accepted {
					return errors.New("probe declined")
				}
				return nil
			}, func(err error) {
				if ran {
					r.emit(inst, StepProbe, nil, c.score, err)
				}
			})
			if err != nil {
				inst.Terminate()
				continue
			}
		}
		probed = append(probed, c)
	}
	sort.SliceStable(probed, func(i, j int) bool { return probed[i].score > probed[j].score })
	started := false
	for _, c := range probed {
		if started {
			c.inst.Terminate()
			continue
		}
		if c.inst.start(c.inst.impl.(Driver)) == nil {
			started = true
			r.mu.Lock()
			nub.matched = true
			r.mu.Unlock()
		}
	}
	return true
}

func (r *Registry) construct(p *Personality) (d Driver, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Callback: "New", Service: p.Name, Value: v}
		}
	}()
	d = p.New()
	if d == nil {
		return nil, errors.New("the constructor returned a nil driver")
	}
	return d, nil
}

// kick wakes the termination worker.
func (r *Registry) kick() {
	select {
	case r.kickc <- struct{}{}:
	default:
	}
}

// --- managed resources ---

type resource struct {
	c io.Closer
	f func()
}

// Manage registers c to be closed after Stop (or when Start fails), in
// reverse order of registration. Once s's resources are released, Manage
// closes c at once and returns ErrNotActive.
func (s *Service) Manage(c io.Closer) error {
	return s.manage(resource{c: c})
}

// ManageFunc is Manage for a function.
func (s *Service) ManageFunc(f func()) error {
	return s.manage(resource{f: f})
}

func (s *Service) manage(x resource) error {
	s.mu.Lock()
	if !s.resDone {
		e := s.extra()
		e.res = append(e.res, x)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	s.closeResource(x)
	return opErr("manage", s, ErrNotActive)
}

// releaseResources closes what Start or the driver registered, last first.
// After the terminal release nothing more is accepted.
func (s *Service) releaseResources() {
	s.mu.Lock()
	var res []resource
	if s.x != nil {
		res, s.x.res = s.x.res, nil
	}
	s.mu.Unlock()
	for i := len(res) - 1; i >= 0; i-- {
		s.closeResource(res[i])
	}
}

func (s *Service) finalReleaseResources() {
	s.mu.Lock()
	s.resDone = true
	s.mu.Unlock()
	s.releaseResources()
}

func (s *Service) closeResource(x resource) {
	defer func() {
		if v := recover(); v != nil {
			s.reg.log.Error("managed resource release panicked", "service", s.describe(), "panic", fmt.Sprint(v))
		}
	}()
	if x.f != nil {
		x.f()
		return
	}
	if err := x.c.Close(); err != nil {
		s.reg.log.Warn("managed resource close failed", "service", s.describe(), "err", err)
	}
}

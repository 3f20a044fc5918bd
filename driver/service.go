package driver

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/internal/faultinject"
	"github.com/drvkit/drvkit/internal/lazyctx"
	"github.com/drvkit/drvkit/refcount"
)

type kind uint8

const (
	kindRoot kind = iota
	kindNub
	kindDriver
	kindClient
)

// Service is one node of the registry: a nub, a driver instance or a user
// client. Its reference count is owned by the registry: the registry holds
// one reference from creation until the end of its termination, and every
// attachment holds one each way. Drivers take and drop references of their
// own only through TaggedRetain and TaggedRelease; creating and freeing a
// service is the registry's business, so the count's Init and untagged
// Release are not part of a Service's methods.
type Service struct {
	ref  refcount.Object
	reg  *Registry
	kind kind
	// unborn: created after the registry closed; freed at once, no events.
	unborn bool

	// Guarded by reg.mu.
	active     bool // false from phase 1 on
	registered bool
	matched    bool
	listed     bool // the registry reference is held

	// Guarded by mu.
	ctxDone   bool
	qStopped  bool // stopped before any job was submitted
	callsDone bool // termination reached phase 3: no new calls
	resDone   bool
	isFreed   bool

	name  string
	props Properties
	pers  *Personality

	// Guarded by reg.mu.
	slot      int // index in reg.live
	providers []*Service
	clients   map[*Service]struct{}
	openers   map[*Service]bool // client → exclusive
	term      *termState        // nil until terminated, then &ts
	ts        termState         // in place: terminating 100k services allocates no state for each

	matchMu sync.Mutex // one matching run per nub at a time

	// From here to mboxHead, what a message's delivery touches, side by
	// side: a fan-out to a thousand clients touches each client's service
	// once per message, and each cache line it spans is a miss.
	impl any // Driver for driver instances; the handler for user clients

	busy     atomic.Int32
	started  atomic.Bool // Start succeeded (or the service needs none)
	stopped  atomic.Bool // Stop ran: no more callbacks into the driver
	wantKick atomic.Bool
	// Termination messages queued for its handler and not yet delivered
	// (Stop waits for them).
	termMail atomic.Int32

	// cb serializes callbacks. cbWhat and cbSince say which runs, for
	// reports; wantKick asks the unlocker to wake the termination worker,
	// which never blocks on cb (it tries, parks the branch, and is kicked).
	cb      sync.Mutex
	cbSince atomic.Int64 // unix ns when the running callback began; 0 when none
	cbWhat  string       // guarded by mu

	mu sync.Mutex // leaf lock for the lazily built parts
	// Guarded by mu.
	mboxRun bool
	// The running mailbox's reference on s: while the registry still
	// holds its own (regGone false) the mailbox borrows that one and takes
	// none (mboxOwn false) — a traced retain records a stack, and a
	// fan-out to a thousand clients paid two per client per message.
	// finishDetach gives a running mailbox a reference of its own before
	// the registry's goes.
	mboxOwn bool
	regGone bool
	mbox    []delivery
	// mbox[mboxHead] is the next delivery; the array is kept (when small)
	// for the next message, so that a fan-out allocates no mailbox per
	// client per message.
	mboxHead int
	x        *serviceExtra
}

// serviceExtra holds what only some services use (guarded by Service.mu),
// made on first use, so that the many services that never use them stay
// small: the size of a Service decides how much of a large registry a
// termination walk keeps in the CPU caches.
type serviceExtra struct {
	ctx      context.Context
	cancel   context.CancelFunc
	q        *workQueue
	calls    map[*callEntry]struct{}
	res      []resource
	interest map[int]func(Message)
	nextInt  int
	// doneCh is made on demand by Done: most services are never waited for
	// one by one (TerminateSync waits for its whole cascade at once).
	doneCh chan struct{}
}

// extra returns s.x, making it if needed; the caller holds s.mu.
func (s *Service) extra() *serviceExtra {
	if s.x == nil {
		s.x = &serviceExtra{}
	}
	return s.x
}

// runningCallback says which callback runs and since when.
func (s *Service) runningCallback() (string, time.Time, bool) {
	s.mu.Lock()
	what := s.cbWhat
	s.mu.Unlock()
	ns := s.cbSince.Load()
	if ns == 0 {
		return "", time.Time{}, false
	}
	return what, time.Unix(0, ns), true
}

// ID is unique per service for the life of the process.
func (s *Service) ID() uint64 { return s.ref.ID() }

// Class is the service's class name (a nub's bus class, a personality's
// Class, a user client's class).
func (s *Service) Class() string { return s.ref.Class() }

// TaggedRetain takes a reference on s on behalf of tag, which must be
// comparable; release it with TaggedRelease and the same tag. The IOKit
// idiom provider.TaggedRetain(self), a service as the tag, records an
// ownership edge self → provider that leak reports follow. Use a pointer
// or a zero-size value as the tag: anything else is boxed on the heap.
func (s *Service) TaggedRetain(tag any) { s.ref.TaggedRetain(tag) }

// TaggedRelease drops a reference taken by TaggedRetain with the same tag.
// With tracing on, a tag that holds no reference is reported as misuse.
func (s *Service) TaggedRelease(tag any) { s.ref.TaggedRelease(tag) }

// RetainCount is the current count, a snapshot for reports: only the
// holder of a reference may rely on it staying above zero.
func (s *Service) RetainCount() int { return s.ref.RetainCount() }

// Traced reports whether s's class records its reference history and
// holders (refcount.Trace, DRVKIT_REFTRACE).
func (s *Service) Traced() bool { return s.ref.Traced() }

// RefObject returns s's reference count for refcount's reports
// (refcount.WhyAlive, Holders, History). It also makes a *Service a
// refcount.Owner, so that a service used as a tag is an ownership edge.
// It is not a way to retain or release: the registry made the count and
// frees the service, and an untagged Release on it drops a reference the
// registry owns.
func (s *Service) RefObject() *refcount.Object { return &s.ref }

// Name is the instance name given at creation.
func (s *Service) Name() string { return s.name }

// Properties returns the immutable property snapshot.
func (s *Service) Properties() Properties { return s.props }

// Registry returns the registry the service belongs to.
func (s *Service) Registry() *Registry { return s.reg }

// Driver returns the driver of a driver instance (or the handler of a user
// client when it implements Driver); nil otherwise.
func (s *Service) Driver() Driver {
	d, _ := s.impl.(Driver)
	return d
}

// Handler returns the value given to AttachClient (or the Driver).
func (s *Service) Handler() any { return s.impl }

// Personality returns the personality a driver instance was matched by.
func (s *Service) Personality() *Personality { return s.pers }

func (s *Service) describe() string {
	if s.name == "" {
		return s.ref.String()
	}
	return fmt.Sprintf("%s %q", s.ref.String(), s.name)
}

// String is "Class#ID \"name\"".
func (s *Service) String() string { return s.describe() }

// State is a snapshot of a service's flags.
type State struct {
	Registered bool // published
	Matched    bool // a started driver is attached to it (cleared when the last one detaches)
	// Started: its driver's Start returned success (always true for nubs
	// and user clients). A driver is attached, and Active, while its Start
	// runs; only a started one is ready for applications.
	Started     bool
	Active      bool // not terminated
	Terminating bool // terminated and not yet detached
	Stopped     bool
	Busy        int // callbacks, jobs and calls in progress
	OpenCount   int // clients holding it open
	Refs        int
}

// State returns the current flags.
func (s *Service) State() State {
	r := s.reg
	r.mu.Lock()
	st := State{Registered: s.registered, Matched: s.matched, Active: s.active,
		Terminating: !s.active && s.listed, Stopped: s.stopped.Load(), OpenCount: len(s.openers)}
	r.mu.Unlock()
	st.Started = s.started.Load()
	st.Busy = int(s.busy.Load())
	st.Refs = s.RetainCount()
	return st
}

// Providers returns the services s is attached to, in attach order.
func (s *Service) Providers() []*Service {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return append([]*Service(nil), s.providers...)
}

// Clients returns the services attached to s, oldest first.
func (s *Service) Clients() []*Service {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return s.sortedClientsLocked()
}

func (s *Service) sortedClientsLocked() []*Service {
	return sortedByID(s.clients)
}

// sortedByID lists a set of services oldest first; no allocation when empty.
func sortedByID[V any](m map[*Service]V) []*Service {
	if len(m) == 0 {
		return nil
	}
	return appendByID(make([]*Service, 0, len(m)), m)
}

// appendByID appends a set of services to dst, oldest first.
func appendByID[V any](dst []*Service, m map[*Service]V) []*Service {
	n := len(dst)
	for c := range m {
		dst = append(dst, c)
	}
	if len(dst)-n > 1 {
		slices.SortFunc(dst[n:], func(a, b *Service) int { return cmp.Compare(a.ID(), b.ID()) })
	}
	return dst
}

// Openers returns the clients holding s open.
func (s *Service) Openers() []*Service {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	return sortedByID(s.openers)
}

// Done is closed when the service is freed.
func (s *Service) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.extra()
	if x.doneCh == nil {
		x.doneCh = make(chan struct{})
		if s.isFreed {
			close(x.doneCh)
		}
	}
	return x.doneCh
}

// markFreed closes Done, if anyone asked for it.
func (s *Service) markFreed() {
	s.mu.Lock()
	s.isFreed = true
	var ch chan struct{}
	if s.x != nil {
		ch = s.x.doneCh
	}
	s.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (s *Service) freedYet() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.isFreed
}

// Context is cancelled when the service is terminated (phase 1). Start and
// client methods run under it.
func (s *Service) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.extra()
	if x.ctx == nil {
		x.ctx, x.cancel = context.WithCancel(context.Background())
		if s.ctxDone {
			x.cancel()
		}
	}
	return x.ctx
}

// contextDone marks s's Context done (phase 1) and returns the function
// to call, outside the registry lock, that cancels it and the contexts of
// the client method calls in flight; nil if there is nothing to cancel.
func (s *Service) contextDone() context.CancelFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctxDone = true
	if s.x == nil {
		return nil
	}
	if len(s.x.calls) == 0 {
		return s.x.cancel
	}
	cancels := make([]context.CancelFunc, 0, len(s.x.calls)+1)
	if s.x.cancel != nil {
		cancels = append(cancels, s.x.cancel)
	}
	for ce := range s.x.calls {
		cancels = append(cancels, ce.ctx.End)
	}
	return func() {
		for _, c := range cancels {
			c()
		}
	}
}

// --- callbacks ---

// callbackThen is callback with then run on the result before the lock is
// released, so that what then records is ordered before the next callback.
func (s *Service) callbackThen(what string, f func() error, then func(error)) error {
	s.cb.Lock()
	return s.runLocked(what, f, then)
}

// tryCallback is callback for the termination worker: it does not wait for
// a busy service. ran is false when the callback lock was taken; the worker
// is kicked when it is released.
func (s *Service) tryCallback(what string, f func() error) (ran bool, err error) {
	if !s.cb.TryLock() {
		s.wantKick.Store(true)
		if !s.cb.TryLock() {
			return false, nil
		}
	}
	return true, s.runLocked(what, f, nil)
}

func (s *Service) runLocked(what string, f func() error, then func(error)) (err error) {
	s.enterCallback(what)
	defer func() {
		if v := recover(); v != nil {
			err = s.callbackPanicked(what, v)
		}
		if then != nil {
			then(err)
		}
		s.leaveCallback()
	}()
	return f()
}

// runMessage is runLocked for a MessageHandler, without the closures: a
// fan-out passes here once per client.
func (s *Service) runMessage(h MessageHandler, m Message) (err error) {
	s.enterCallback("Message")
	defer func() {
		if v := recover(); v != nil {
			err = s.callbackPanicked("Message", v)
		}
		s.leaveCallback()
	}()
	return h.Message(s, m)
}

// enterCallback records that what runs; s.cb is held.
func (s *Service) enterCallback(what string) {
	s.busy.Add(1)
	s.mu.Lock()
	s.cbWhat = what
	s.mu.Unlock()
	s.cbSince.Store(time.Now().UnixNano())
}

// leaveCallback ends what enterCallback began and releases s.cb.
func (s *Service) leaveCallback() {
	s.cbSince.Store(0)
	s.busy.Add(-1)
	s.cb.Unlock()
	if s.wantKick.Swap(false) {
		s.reg.kick()
	}
}

// callbackPanicked logs a driver callback's panic and returns it as the
// callback's error.
func (s *Service) callbackPanicked(what string, v any) error {
	pe := &PanicError{Callback: what, Service: s.describe(), Value: v, Stack: string(debug.Stack())}
	s.reg.log.Error("driver callback panicked", "callback", what, "service", s.describe(),
		"panic", fmt.Sprint(v), "stack", pe.Stack)
	return pe
}

// --- messages and interest ---

// MessageType says what a Message is about.
type MessageType uint32

const (
	ServiceIsTerminated      MessageType = iota + 1 // the sender was terminated
	ServiceIsRequestingClose                        // the sender is terminating: close it
	ServiceWasClosed                                // From closed the service
	ServiceIsAttemptingOpen                         // From tried to open a service you hold
	// MessageDriverDefined is the first type free for drivers.
	MessageDriverDefined MessageType = 0x10000
)

func (t MessageType) String() string {
	switch t {
	case ServiceIsTerminated:
		return "ServiceIsTerminated"
	case ServiceIsRequestingClose:
		return "ServiceIsRequestingClose"
	case ServiceWasClosed:
		return "ServiceWasClosed"
	case ServiceIsAttemptingOpen:
		return "ServiceIsAttemptingOpen"
	}
	if t >= MessageDriverDefined {
		return fmt.Sprintf("DriverDefined(%#x)", uint32(t-MessageDriverDefined))
	}
	return fmt.Sprintf("MessageType(%d)", uint32(t))
}

// Message is delivered to a client's MessageHandler or to interest
// listeners. From is the ID of the service the message is about or comes
// from.
//
// ServiceIsTerminated and ServiceIsRequestingClose carry why From was
// terminated: Cause is From's own cause (CauseProviderTerminated when the
// termination reached it by cascade), RootCause the cause of the service
// the termination began with (equal to Cause when that is From). Other
// messages carry CauseUnknown in both.
type Message struct {
	Type MessageType
	// Next to Type, where they take no room of their own: a termination
	// posts a Message to every client at once.
	Cause, RootCause Cause
	From             uint64
	Data             any
	// Batch is the fan-out's, for an InlineMessageHandler called on the
	// sender's goroutine; nil otherwise.
	Batch *Batch
}

type delivery struct {
	m        Message
	toDriver bool     // to s's MessageHandler; else to s's interest listeners
	from     *Service // the provider, for the default RequestingClose handling
}

type mailboxTag struct{}

func (mailboxTag) String() string { return "mailbox" }

// post queues a message for s. Messages to one service are delivered in
// order, one at a time, under s's callback lock for its driver; s stays
// alive while its mailbox has messages (the registry's reference, or the
// mailbox's own once that is gone). The caller guarantees s is alive.
func (s *Service) post(d delivery) {
	if s.enqueue(d) {
		s.reg.mail.schedule(s)
	}
}

// enqueue adds d to s's mailbox and reports whether s must be scheduled
// for delivery (its mailbox was idle).
func (s *Service) enqueue(d delivery) bool {
	s.mu.Lock()
	if d.toDriver {
		if _, ok := s.impl.(MessageHandler); !ok && d.m.Type != ServiceIsRequestingClose {
			s.mu.Unlock()
			return false
		}
	} else if s.x == nil || len(s.x.interest) == 0 {
		s.mu.Unlock()
		return false
	}
	if len(s.mbox) == cap(s.mbox) && s.mboxHead > 0 {
		// Full with delivered entries in front: reuse their room.
		n := copy(s.mbox, s.mbox[s.mboxHead:])
		clear(s.mbox[n:])
		s.mbox, s.mboxHead = s.mbox[:n], 0
	}
	s.mbox = append(s.mbox, d)
	if d.toDriver && d.m.isTermination() {
		s.termMail.Add(1)
	}
	start := !s.mboxRun
	if start {
		s.mboxRun = true
		if s.regGone {
			s.mboxOwn = true
			s.TaggedRetain(mailboxTag{})
		}
	}
	s.mu.Unlock()
	return start
}

// registryLetGo is called before the registry's reference on s is
// released: a running mailbox, which borrowed it, takes its own.
func (s *Service) registryLetGo() {
	s.mu.Lock()
	s.regGone = true
	if s.mboxRun && !s.mboxOwn {
		s.mboxOwn = true
		s.TaggedRetain(mailboxTag{})
	}
	s.mu.Unlock()
}

// mailPool delivers messages with a few goroutines instead of one per
// service: a termination posts to every client at once. A delivery that
// would wait for a busy callback lock is handed to a goroutine of its own,
// so that one slow driver never holds up the others' messages.
type mailPool struct {
	mu      sync.Mutex
	q       []*Service
	workers int
	max     int
}

func (p *mailPool) schedule(ss ...*Service) {
	if len(ss) == 0 {
		return
	}
	p.mu.Lock()
	p.q = append(p.q, ss...)
	spawn := min(p.max-p.workers, len(ss))
	p.workers += spawn
	p.mu.Unlock()
	for range spawn {
		go p.work()
	}
}

func (p *mailPool) work() {
	var batch [mailBatch]*Service
	for {
		p.mu.Lock()
		if len(p.q) == 0 {
			p.workers--
			p.q = nil
			p.mu.Unlock()
			return
		}
		// A few at a time, a fair share of what waits: the workers of a
		// fan-out to a thousand clients take the pool's lock, which
		// they all share, a few dozen times instead of a thousand.
		n := copy(batch[:min(mailBatch, max(1, len(p.q)/p.workers))], p.q)
		clear(p.q[:n])
		p.q = p.q[n:]
		p.mu.Unlock()
		for i, s := range batch[:n] {
			batch[i] = nil
			s.drainMailbox(drainPool)
		}
	}
}

// mailBatch is the most services a mail worker takes at once.
const mailBatch = 16

// drainMode says where drainMailbox runs, and so what it may do.
type drainMode uint8

const (
	drainPool   drainMode = iota // a pool worker: never waits for a callback lock
	drainOwn                     // a goroutine of its own: may wait
	drainInline                  // the sender of a fan-out: never waits, and runs only InlineMessageHandlers
)

// drainMailbox delivers s's messages until none is left. When it may not
// block (a pool worker, a sender) and s's callback lock is busy, it hands
// the rest to a goroutine that may; a sender hands what is not for an
// InlineMessageHandler (interest listeners) to the pool.
func (s *Service) drainMailbox(mode drainMode) {
	s.mu.Lock()
	for {
		if s.mboxHead == len(s.mbox) {
			s.mboxRun = false
			s.mbox, s.mboxHead = s.mbox[:0], 0
			if cap(s.mbox) > 4 {
				s.mbox = nil // a burst's array is not kept
			}
			own := s.mboxOwn
			s.mboxOwn = false
			s.mu.Unlock()
			if own {
				s.TaggedRelease(mailboxTag{})
			}
			return
		}
		d := s.mbox[s.mboxHead]
		if mode == drainInline && !d.toDriver {
			s.mu.Unlock()
			s.reg.mail.schedule(s)
			return
		}
		var ls []func(Message)
		if !d.toDriver && s.x != nil {
			ids := make([]int, 0, len(s.x.interest))
			for id := range s.x.interest {
				ids = append(ids, id)
			}
			sort.Ints(ids)
			for _, id := range ids {
				ls = append(ls, s.x.interest[id])
			}
		}
		s.mu.Unlock()
		if d.toDriver {
			if !s.deliverToDriver(d, mode == drainOwn) {
				go s.drainMailbox(drainOwn)
				return
			}
		} else {
			for _, f := range ls {
				s.callListener(f, d.m)
			}
		}
		// One lock for taking the delivery off and looking at the next:
		// a fan-out passes here once per client.
		s.mu.Lock()
		s.mbox[s.mboxHead] = delivery{}
		s.mboxHead++
		if d.toDriver && d.m.isTermination() && s.termMail.Add(-1) == 0 {
			s.mu.Unlock()
			s.reg.kick() // its Stop may be waiting for this
			s.mu.Lock()
		}
	}
}

// isTermination reports whether m is one the driver must get before its
// Stop: a provider's ServiceIsTerminated or ServiceIsRequestingClose.
func (m *Message) isTermination() bool {
	return m.Type == ServiceIsTerminated || m.Type == ServiceIsRequestingClose
}

func (s *Service) callListener(f func(Message), m Message) {
	defer func() {
		if v := recover(); v != nil {
			s.reg.log.Error("interest listener panicked", "service", s.describe(), "message", m.Type.String(), "panic", fmt.Sprint(v))
		}
	}()
	f(m)
}

// deliverToDriver reports false, without delivering, when it may not block
// and the callback lock is busy.
func (s *Service) deliverToDriver(d delivery, mayBlock bool) bool {
	if s.stopped.Load() {
		return true // nothing calls a driver after its Stop
	}
	h, ok := s.impl.(MessageHandler)
	if !ok {
		// The default answer to RequestingClose, as IOService gives it: a
		// client that does not handle messages closes at once.
		if d.m.Type == ServiceIsRequestingClose && d.from != nil {
			_ = d.from.Close(s)
		}
		return true
	}
	if mayBlock {
		s.cb.Lock()
	} else if !s.cb.TryLock() {
		return false
	}
	if s.stopped.Load() {
		s.cb.Unlock()
		return true
	}
	if err := s.runMessage(h, d.m); err != nil {
		s.reg.log.Warn("driver message handler failed", "service", s.describe(), "message", d.m.Type.String(), "err", err)
	}
	return true
}

// AddInterest calls f, in order and never concurrently, for every message
// about s: ServiceIsTerminated, ServiceWasClosed, driver notifications.
func (s *Service) AddInterest(f func(Message)) (remove func()) {
	s.mu.Lock()
	x := s.extra()
	if x.interest == nil {
		x.interest = map[int]func(Message){}
	}
	id := x.nextInt
	x.nextInt++
	x.interest[id] = f
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(x.interest, id)
		s.mu.Unlock()
	}
}

// Notify sends a message about s to its interest listeners.
func (s *Service) Notify(t MessageType, data any) {
	s.post(delivery{m: Message{Type: t, From: s.ID(), Data: data}})
}

// MessageClients sends a message to the MessageHandler of every client of
// s. Delivery is asynchronous and in order per client.
func (s *Service) MessageClients(t MessageType, data any) {
	r := s.reg
	r.mu.Lock()
	// In the map's order, not sorted by ID: each client's messages stay in
	// order in its mailbox, and the pool delivers to different clients in
	// no set order anyway. (Sorting a thousand clients was a tenth of a
	// millisecond before the first delivery of a fan-out, under the
	// registry lock.)
	// The clients whose mailbox was idle: those to schedule at once from
	// the front, those to deliver to here from the back.
	idle := make([]*Service, len(s.clients))
	nw, ni := 0, len(idle)
	d := delivery{m: Message{Type: t, From: s.ID(), Data: data}, toDriver: true, from: s}
	mayInline := !d.m.isTermination() // counted in termMail, so always queued
	for c := range s.clients {
		if _, ok := c.impl.(InlineMessageHandler); ok && mayInline && c.claimMailbox() {
			// Delivered below without passing through the mailbox.
			ni--
			idle[ni] = c
		} else if c.enqueue(d) {
			idle[nw] = c
			nw++
		}
	}
	r.mu.Unlock()
	wake, inline := idle[:nw], idle[ni:]
	r.mail.schedule(wake...)
	if len(inline) == 0 {
		return
	}
	b := batches.Get().(*Batch)
	d.m.Batch = b
	for len(inline) > 0 {
		chunk := inline[:min(len(inline), batchMax)]
		inline = inline[len(chunk):]
		// What the chunk's deliveries will touch, loaded first in a loop
		// without a lock: the clients' memory went cold since the loop
		// above, and the CPU overlaps these misses, where the deliveries'
		// locks would take them one at a time.
		runtime.KeepAlive(prefetchChunk(chunk))
		for _, c := range chunk {
			c.deliverClaimed(d)
		}
		b.flush(r.log)
	}
	batches.Put(b)
}

// prefetchChunk runs prefetchDelivery for each of chunk. A handler's
// PrefetchMessage that panics is logged and ends the prefetch, nothing
// else: the chunk's mailboxes are claimed, and only their deliveries
// release them.
func prefetchChunk(chunk []*Service) (touched uintptr) {
	var c *Service
	defer func() {
		if v := recover(); v != nil {
			c.reg.log.Error("client's PrefetchMessage panicked", "service", c.describe(), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	for _, c = range chunk {
		touched += c.prefetchDelivery()
	}
	return touched
}

// prefetchDelivery loads, without locking, what a delivery to s touches:
// its callback and mailbox fields, and what its handler's
// PrefetchMessage loads. The sum only keeps the loads from being dropped.
func (s *Service) prefetchDelivery() uintptr {
	v := uintptr(s.cbSince.Load()) + uintptr(s.termMail.Load())
	if p, ok := s.impl.(MessagePrefetcher); ok {
		v += p.PrefetchMessage()
	}
	return v
}

// claimMailbox takes s's mailbox, when it is idle, for a delivery its
// caller makes at once without queueing it; it reports false when messages
// are queued or being delivered, which a new one must follow. The caller
// guarantees s is alive, and calls deliverClaimed.
func (s *Service) claimMailbox() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mboxRun {
		return false
	}
	s.mboxRun = true
	if s.regGone {
		s.mboxOwn = true
		s.TaggedRetain(mailboxTag{})
	}
	return true
}

// deliverClaimed delivers d to s, whose mailbox the caller claimed, then
// delivers what queued behind it meanwhile and gives the mailbox back. If
// s's callback lock is busy, d goes first in the queue, to a goroutine
// that may wait for the lock.
func (s *Service) deliverClaimed(d delivery) {
	if !s.deliverToDriver(d, false) {
		d.m.Batch = nil // delivered later, after the batch's flush
		s.mu.Lock()
		s.mbox = slices.Insert(s.mbox, s.mboxHead, d)
		s.mu.Unlock()
		go s.drainMailbox(drainOwn)
		return
	}
	s.drainMailbox(drainInline)
}

// --- open and close ---

// OpenOptions says how a client opens its provider.
type OpenOptions struct {
	Exclusive bool
}

// Open records that client, attached to s, has s open. An exclusive open
// fails with ErrExclusive while anyone else has s open; any open fails while
// someone has it exclusively, and that holder is sent
// ServiceIsAttemptingOpen. Open fails with ErrNotActive once s is terminated.
func (s *Service) Open(client *Service, opts OpenOptions) error {
	if err := faultinject.At(faultinject.Open, client); err != nil {
		return opErr("open", s, err)
	}
	r := s.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	if !s.active || !client.active {
		return opErr("open", s, ErrNotActive)
	}
	if !client.attachedTo(s) {
		return opErr("open", s, ErrNotAttached)
	}
	if excl, ok := s.openers[client]; ok {
		if excl == opts.Exclusive {
			return nil
		}
		return opErr("open", s, fmt.Errorf("%w: already open by %s with another mode", ErrExclusive, client.describe()))
	}
	for c, excl := range s.openers {
		if excl || opts.Exclusive {
			c.post(delivery{m: Message{Type: ServiceIsAttemptingOpen, From: client.ID()}, toDriver: true, from: s})
			return opErr("open", s, fmt.Errorf("%w: open by %s", ErrExclusive, c.describe()))
		}
	}
	if s.openers == nil {
		s.openers = map[*Service]bool{}
	}
	s.openers[client] = opts.Exclusive
	// Never the last reference: client is attached, and its attachment
	// reference is released only after closeLocked.
	s.TaggedRetain(openLink{client})
	return nil
}

// Close ends client's open of s; interest listeners of s get
// ServiceWasClosed. A terminating s waiting for its clients to close carries
// on.
func (s *Service) Close(client *Service) error {
	r := s.reg
	r.mu.Lock()
	if _, ok := s.openers[client]; !ok {
		r.mu.Unlock()
		return opErr("close", s, ErrNotOpen)
	}
	s.closeLocked(client)
	r.mu.Unlock()
	return nil
}

func (s *Service) closeLocked(client *Service) {
	delete(s.openers, client)
	s.TaggedRelease(openLink{client}) // not the last: see Open
	s.post(delivery{m: Message{Type: ServiceWasClosed, From: client.ID()}})
	if s.term != nil {
		s.reg.kick()
	}
}

// IsOpen reports whether client has s open.
func (s *Service) IsOpen(client *Service) bool {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	_, ok := s.openers[client]
	return ok
}

func (s *Service) attachedTo(p *Service) bool {
	for _, x := range s.providers {
		if x == p {
			return true
		}
	}
	return false
}

// --- client methods ---

type callEntry struct {
	method string
	since  time.Time
	ctx    *lazyctx.Context // the call's context: ended when s is terminated
}

// Call runs the named client method of s's driver (see ClientMethods) on
// the caller's goroutine, under a context that is also cancelled when s is
// terminated. Client methods are not lifecycle callbacks: they may run
// concurrently with each other and with Message (the driver guards its own
// state, e.g. with Monitored values), but never with Stop: termination
// waits for calls in flight, like jobs, before Stop runs. Not serializing
// them with Start lets a driver whose Start publishes a child nub serve the
// child's calls.
func (s *Service) Call(ctx context.Context, method string, in []byte) (out []byte, err error) {
	cm, ok := s.impl.(ClientMethods)
	if !ok {
		return nil, opErr("call "+method, s, ErrNoMethod)
	}
	m := cm.Methods()[method]
	if m == nil {
		return nil, opErr("call "+method, s, ErrNoMethod)
	}
	if !s.isActive() {
		return nil, opErr("call "+method, s, ErrNotActive)
	}
	// The context ends with the caller's or with s: phase 1 cancels the
	// calls registered here (contextDone), which costs a call nothing,
	// where context.AfterFunc on s.Context() cost four allocations; and it
	// follows the caller's only if the method waits on it (lazyctx).
	cctx := lazyctx.New(ctx)
	defer cctx.End()
	ctx = cctx
	ce := &callEntry{method: method, since: time.Now(), ctx: cctx}
	s.mu.Lock()
	if s.callsDone {
		s.mu.Unlock()
		return nil, opErr("call "+method, s, ErrNotActive)
	}
	x := s.extra()
	if x.calls == nil {
		x.calls = map[*callEntry]struct{}{}
	}
	x.calls[ce] = struct{}{}
	terminated := s.ctxDone
	s.mu.Unlock()
	if terminated {
		cctx.End()
	}
	s.busy.Add(1)
	defer func() {
		if v := recover(); v != nil {
			pe := &PanicError{Callback: "Call " + method, Service: s.describe(), Value: v, Stack: string(debug.Stack())}
			s.reg.log.Error("client method panicked", "method", method, "service", s.describe(), "panic", fmt.Sprint(v), "stack", pe.Stack)
			out, err = nil, pe
		}
		s.busy.Add(-1)
		s.mu.Lock()
		delete(x.calls, ce)
		idle := s.callsDone && len(x.calls) == 0
		s.mu.Unlock()
		if idle {
			s.reg.kick()
		}
	}()
	if err := faultinject.At(faultinject.Call, s); err != nil {
		return nil, opErr("call "+method, s, err)
	}
	return m(ctx, s, in)
}

// stopCalls refuses new calls; callsInFlight says when the last returned.
func (s *Service) stopCalls() {
	s.mu.Lock()
	s.callsDone = true
	s.mu.Unlock()
}

func (s *Service) callsInFlight() []string {
	s.mu.Lock()
	if s.x == nil || len(s.x.calls) == 0 {
		s.mu.Unlock()
		return nil
	}
	es := make([]*callEntry, 0, len(s.x.calls))
	for e := range s.x.calls {
		es = append(es, e)
	}
	s.mu.Unlock()
	slices.SortFunc(es, func(a, b *callEntry) int { return a.since.Compare(b.since) })
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, fmt.Sprintf("client method %q running since %s (%s)", e.method,
			e.since.Format("15:04:05.000"), time.Since(e.since).Round(time.Millisecond)))
	}
	return out
}

package refcount

import (
	"fmt"
	"github.com/drvkit/drvkit/refcount/internal/ancestry"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Holding is one outstanding holder of an object: a tag (or the untagged
// holder, Tag == "") with its count and the stacks of its unmatched
// retains.
type Holding struct {
	Tag   string
	Owner *Object // non-nil when the tag is an Owner: an ownership edge
	// Structural is true when the tag implements Structural: the
	// reference links the holder to the object (a registry plane, an
	// attachment) rather than using it. WhyAlive follows owning
	// references; structural ones are context.
	Structural bool
	Count      int
	Stacks     []Stack
	// StackCounts[i] is how many of the Count references were taken at
	// Stacks[i]. When Ambiguous, it is how many retains were made there
	// since the tag last held nothing, and they add up to more than Count.
	StackCounts []int
	// Ambiguous is true when the tag was retained at different stacks and
	// released fewer times: which retains the releases paired with is
	// unknown, so every candidate stack is listed (Stacks), and Count of
	// them are still outstanding.
	Ambiguous bool

	tag    any
	stacks []stackCount
}

// Structural is implemented by a tag whose references are structural:
// they record that the holder is linked to the object, as IOKit's registry
// planes do, rather than that it uses the object. A provider and its
// client hold each other this way in drvkit, and the registry holds every
// registered service. WhyAlive answers with owning chains and shows
// structural references only as context.
type Structural interface {
	StructuralRef()
}

type stackCount struct {
	id stackID
	n  int
}

// Op is the kind of a recorded event.
type Op uint8

const (
	OpInit    Op = iota + 1 // the creator's reference
	OpRetain                // Retain or TaggedRetain
	OpRelease               // Release or TaggedRelease
	OpFree                  // the count reached zero; free ran
)

func (op Op) String() string {
	switch op {
	case OpInit:
		return "init"
	case OpRetain:
		return "retain"
	case OpRelease:
		return "release"
	case OpFree:
		return "free"
	}
	return fmt.Sprintf("Op(%d)", int(op))
}

// Event is one recorded operation on a traced object.
type Event struct {
	Seq   uint64 // 1 for Init, then one per event: gaps never occur
	Op    Op
	Tag   string
	Count int // the count after the operation
	Time  time.Time
	Stack Stack
}

// event is the stored form: 40 bytes, the stack by depot id.
type event struct {
	tag   any
	time  int64 // nanoseconds since epoch (monotonic)
	stack stackID
	count int32
	op    Op
}

// holding is the stored form of one holder, 8 bytes so that a tag
// holding a single reference (the common case: one tag per client, per
// job, per attachment) costs one small map slot. While every outstanding
// retain of the tag was taken at the same stack, the pairing is exact: the
// ids form a LIFO, the newest inline, older ones in tracked.deeper. Once
// retains at different stacks are outstanding (mixed) and one is released,
// nobody knows which one went: the tag turns ambiguous and tracked.amb
// keeps every candidate stack until the tag holds nothing again.
type holding struct {
	n   int32
	top stackID // newest retain's stack; 0 once ambiguous; | mixedBit
}

// mixedBit in holding.top says that outstanding retains were taken at more
// than one stack (a bit, not a field: a holding stays 8 bytes, the map slot
// of a million distinct tags too). Stack ids never reach it.
const mixedBit stackID = 1 << 31

func (h holding) id() stackID { return h.top &^ mixedBit }
func (h holding) mixed() bool { return h.top&mixedBit != 0 }

// push records a retain by tag at stack id; t.mu is held.
func (t *tracked) push(tag any, id stackID) {
	h := t.holders[tag]
	if h.n > 0 {
		if c := t.amb[tag]; c != nil {
			c[id]++
			h.n++
			t.holders[tag] = h
			return
		}
		mixed := h.mixed() || id != h.id()
		if t.deeper == nil {
			t.deeper = map[any][]stackID{}
		}
		t.deeper[tag] = append(t.deeper[tag], h.id())
		h.top = id
		if mixed {
			h.top |= mixedBit
		}
		h.n++
		t.holders[tag] = h
		return
	}
	h.top = id
	h.n++
	t.holders[tag] = h
}

// pop records a release by tag, which holds h; t.mu is held.
func (t *tracked) pop(tag any, h holding) {
	h.n--
	if h.n == 0 {
		delete(t.holders, tag)
		if len(t.deeper) > 0 {
			delete(t.deeper, tag)
		}
		if len(t.amb) > 0 {
			delete(t.amb, tag)
		}
		return
	}
	if h.mixed() {
		c := t.amb[tag]
		if c == nil {
			// The first release that could pair with retains at
			// different stacks: keep them all as candidates.
			c = map[stackID]int32{h.id(): 1}
			for _, id := range t.deeper[tag] {
				c[id]++
			}
			delete(t.deeper, tag)
			if t.amb == nil {
				t.amb = map[any]map[stackID]int32{}
			}
			t.amb[tag] = c
			h.top = mixedBit // ambiguous until the tag holds nothing
		}
		t.holders[tag] = h
		return
	}
	// Keep the emptied slice while the tag still holds: a tag bouncing
	// between one and two references (the creator's plus a
	// retain/release pair) then allocates nothing.
	r := t.deeper[tag]
	h.top = r[len(r)-1]
	t.deeper[tag] = r[:len(r)-1]
	t.holders[tag] = h
}

// each calls f for the stack of each unmatched retain of an unambiguous
// tag, and for each candidate stack (with its retains) of an ambiguous one.
func (t *tracked) each(tag any, h holding, f func(id stackID, n int)) (ambiguous bool) {
	if h.n == 0 {
		return false
	}
	if c := t.amb[tag]; c != nil {
		for id, n := range c {
			f(id, int(n))
		}
		return true
	}
	f(h.id(), 1)
	for _, id := range t.deeper[tag] {
		f(id, 1)
	}
	return false
}

// tracked is the trace state of a traced object. It outlives the free: it
// is the freed record that lets a later retain or release on the dead
// object name the stack that freed it.
type tracked struct {
	obj *Object
	mu  sync.Mutex

	holders  map[any]holding
	deeper   map[any][]stackID         // older retains of tags holding more than one
	amb      map[any]map[stackID]int32 // candidate retains of ambiguous tags
	ring     []event                   // bounded history; grows to size, then wraps
	size     int32
	total    uint64 // events ever recorded
	retains  uint64
	releases uint64

	created   int64
	goid      uint64
	parent    uint64
	label     string // attribution label (Do) bound at Init
	freed     bool
	freeStack stackID
	count     atomic.Int32 // the traced count: written under mu, read anywhere
}

var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

func timeOf(ns int64) time.Time { return epoch.Add(time.Duration(ns)) }

// History size for objects initialized from now on.
var historySize atomic.Int32

func init() { historySize.Store(64) }

// SetHistorySize sets how many events each traced object keeps (default
// 64; at least 1) for objects initialized from now on, and returns the
// previous size.
func SetHistorySize(n int) (previous int) {
	if n < 1 {
		n = 1
	}
	return int(historySize.Swap(int32(n)))
}

var (
	traceMu  sync.RWMutex
	traceAll bool
	traceSet map[string]bool
	traceOn  atomic.Bool // fast check: anything traced at all
)

// EnvVar is read at package initialization: "all" (or "1") traces every
// class, a comma-separated list traces those classes, "" or "off" nothing.
const EnvVar = "DRVKIT_REFTRACE"

func init() { configureFromEnv(os.Getenv(EnvVar)) }

func configureFromEnv(v string) {
	v = strings.TrimSpace(v)
	switch strings.ToLower(v) {
	case "", "0", "off", "none":
		return
	case "all", "1", "*":
		TraceAll()
		return
	}
	var classes []string
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c != "" {
			classes = append(classes, c)
		}
	}
	Trace(classes...)
}

// TraceAll turns tracing on for every class. Objects initialized from now on
// are traced; whether an object is traced is fixed at Init.
func TraceAll() {
	traceMu.Lock()
	traceAll, traceSet = true, nil
	traceOn.Store(true)
	traceMu.Unlock()
}

// Trace turns tracing on for the named classes (in addition to any already).
func Trace(classes ...string) {
	traceMu.Lock()
	if traceSet == nil {
		traceSet = map[string]bool{}
	}
	for _, c := range classes {
		traceSet[c] = true
	}
	traceOn.Store(traceAll || len(traceSet) > 0)
	traceMu.Unlock()
}

// TraceOff turns tracing off for objects initialized from now on. Objects
// already traced stay traced.
func TraceOff() {
	traceMu.Lock()
	traceAll, traceSet = false, nil
	traceOn.Store(false)
	traceMu.Unlock()
}

// Tracing reports whether objects of class initialized now would be traced.
func Tracing(class string) bool { return tracingEnabled(class) }

func tracingEnabled(class string) bool {
	if !traceOn.Load() {
		return false
	}
	traceMu.RLock()
	defer traceMu.RUnlock()
	return traceAll || traceSet[class]
}

// The registry of live traced objects, sharded by ID so that traced objects
// created and freed on different goroutines rarely share a lock. Untraced
// objects never touch it.
const shards = 64

var live [shards]struct {
	mu sync.Mutex
	m  map[uint64]*Object
	_  [48]byte // keep shards on separate cache lines
}

func register(o *Object) {
	s := &live[o.id%shards]
	s.mu.Lock()
	if s.m == nil {
		s.m = map[uint64]*Object{}
	}
	s.m[o.id] = o
	s.mu.Unlock()
}

func unregister(o *Object) {
	s := &live[o.id%shards]
	s.mu.Lock()
	delete(s.m, o.id)
	s.mu.Unlock()
}

// LiveObjects returns every live traced object, ordered by ID.
func LiveObjects() []*Object {
	var out []*Object
	for i := range live {
		s := &live[i]
		s.mu.Lock()
		for _, o := range s.m {
			out = append(out, o)
		}
		s.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Live counts live traced objects per class.
func Live() map[string]int {
	m := map[string]int{}
	for _, o := range LiveObjects() {
		m[o.class]++
	}
	return m
}

func newTracked(o *Object, sid stackID) *tracked {
	t := &tracked{obj: o, holders: map[any]holding{}, created: now(), size: historySize.Load()}
	t.count.Store(1)
	if ancestry.Wanted() {
		t.goid, t.parent = ancestry.Origin()
		ancestry.Note(t.goid, t.parent)
		t.label = ancestry.LabelOf(t.goid)
	}
	t.push(nil, sid)
	t.ring = make([]event, 0, min(int(t.size), 8))
	t.record(OpInit, nil, sid, 1)
	return t
}

// record appends to the history ring; t.mu must be held (or t unpublished).
func (t *tracked) record(op Op, tag any, sid stackID, count int32) {
	e := event{op: op, tag: tag, stack: sid, count: count, time: now()}
	if len(t.ring) < int(t.size) {
		t.ring = append(t.ring, e) // grows toward size, then wraps
	} else {
		t.ring[t.total%uint64(len(t.ring))] = e
	}
	t.total++
}

func checkTag(tag any) {
	if tag == nil {
		return
	}
	if !reflect.TypeOf(tag).Comparable() {
		panic(fmt.Sprintf("refcount: tag of type %T is not comparable", tag))
	}
}

func (t *tracked) retain(tag any) {
	sid := internStack(3)
	checkTag(tag)
	t.mu.Lock()
	n := t.count.Load()
	var e *Error
	switch {
	case t.freed || n <= 0:
		e = t.errorLocked(ErrResurrected, tag, sid)
		e.Conflict, e.ConflictWhat = stackOf(t.freeStack), "freed"
	case n >= saturated:
		// Pegged and already reported: the object leaks, quietly.
	case n == saturated-1:
		e = t.errorLocked(ErrSaturated, tag, sid)
		e.Conflict, e.ConflictWhat = stackOf(t.lastLocked(OpRetain, nil, false)), "last retained"
		t.count.Store(saturated)
	default:
		t.count.Store(n + 1)
		t.push(tag, sid)
		t.retains++
		t.record(OpRetain, tag, sid, n+1)
	}
	t.mu.Unlock()
	if e != nil {
		report(e)
	}
}

func (t *tracked) release(tag any) {
	sid := internStack(3)
	checkTag(tag)
	o := t.obj
	t.mu.Lock()
	n := t.count.Load()
	var e *Error
	free := false
	h, held := t.holders[tag]
	switch {
	case t.freed || n <= 0:
		e = t.errorLocked(ErrOverRelease, tag, sid)
		e.Conflict, e.ConflictWhat = stackOf(t.freeStack), "freed"
	case n >= saturated:
		// Pegged: leak the object rather than free it early.
	case !held || h.n == 0:
		e = t.errorLocked(ErrTagMismatch, tag, sid)
		if prev := t.lastLocked(OpRelease, tag, true); prev != 0 {
			e.Conflict, e.ConflictWhat = stackOf(prev), "this tag last released"
		} else {
			e.ConflictWhat = "this tag never retained in the recorded history; created"
			e.Conflict = stackOf(t.lastLocked(OpInit, nil, false))
		}
	default:
		t.pop(tag, h)
		t.count.Store(n - 1)
		t.releases++
		t.record(OpRelease, tag, sid, n-1)
		if n-1 == 0 {
			t.freed, t.freeStack, free = true, sid, true
			t.record(OpFree, nil, sid, 0)
		}
	}
	t.mu.Unlock()
	if e != nil {
		report(e)
	}
	if free {
		unregister(o)
		o.runFree()
	}
}

// lastLocked finds the newest event of op in the ring (matching tag when
// byTag) and returns its stack.
func (t *tracked) lastLocked(op Op, tag any, byTag bool) stackID {
	n := len(t.ring)
	for i := 0; i < n; i++ {
		e := &t.ring[(t.total-1-uint64(i))%uint64(n)]
		if e.op == op && (!byTag || e.tag == tag) {
			return e.stack
		}
	}
	return 0
}

func (t *tracked) errorLocked(kind ErrorKind, tag any, sid stackID) *Error {
	return &Error{
		Kind: kind, ID: t.obj.id, Class: t.obj.class, Tag: formatTag(tag),
		Offender: stackOf(sid), Holders: t.holdersLocked(),
	}
}

// Holders returns o's outstanding holders, ordered by tag. It is exact for a
// traced object and nil for an untraced one.
func (o *Object) Holders() []Holding {
	if o.tr == nil {
		return nil
	}
	o.tr.mu.Lock()
	defer o.tr.mu.Unlock()
	return o.tr.holdersLocked()
}

func (t *tracked) holdersLocked() []Holding {
	out := make([]Holding, 0, len(t.holders))
	for tag, h := range t.holders {
		hd := Holding{Tag: formatTag(tag), Count: int(h.n), tag: tag}
		if ow, ok := tag.(Owner); ok {
			hd.Owner = ow.RefObject()
		}
		_, hd.Structural = tag.(Structural)
		counts := map[stackID]int{}
		hd.Ambiguous = t.each(tag, h, func(id stackID, n int) {
			if counts[id] == 0 {
				hd.stacks = append(hd.stacks, stackCount{id: id})
			}
			counts[id] += n
		})
		for i := range hd.stacks {
			hd.stacks[i].n = counts[hd.stacks[i].id]
		}
		sort.SliceStable(hd.stacks, func(i, j int) bool {
			if hd.stacks[i].n != hd.stacks[j].n {
				return hd.stacks[i].n > hd.stacks[j].n
			}
			return hd.stacks[i].id < hd.stacks[j].id
		})
		for _, sc := range hd.stacks {
			hd.Stacks = append(hd.Stacks, stackOf(sc.id))
			hd.StackCounts = append(hd.StackCounts, sc.n)
		}
		out = append(out, hd)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Tag != out[j].Tag {
			return out[i].Tag < out[j].Tag
		}
		return out[i].Count > out[j].Count
	})
	return out
}

// refsAt is how many of h's references to count at its i-th stack: exact
// for an unambiguous holder; for an ambiguous one the retains made there,
// capped by the references outstanding (an upper bound).
func (h Holding) refsAt(i int) int {
	if h.Ambiguous {
		return min(h.stacks[i].n, h.Count)
	}
	return h.stacks[i].n
}

// History returns the recorded events of a traced object, oldest first (at
// most the history size), and nil for an untraced one.
func (o *Object) History() []Event {
	if o.tr == nil {
		return nil
	}
	t := o.tr
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.ring)
	out := make([]Event, 0, n)
	for i := n - 1; i >= 0; i-- {
		seq := t.total - uint64(i) // 1-based
		e := t.ring[(seq-1)%uint64(n)]
		out = append(out, Event{Seq: seq, Op: e.op, Tag: formatTag(e.tag), Count: int(e.count), Time: timeOf(e.time), Stack: stackOf(e.stack)})
	}
	return out
}

// Stats are the totals of a traced object's history: they count every
// event, including those the bounded ring has dropped.
type Stats struct {
	Events   uint64 // every recorded event, Init and Free included
	Retains  uint64
	Releases uint64
	Freed    bool
}

// TraceStats returns the totals of a traced object (zero when untraced).
func (o *Object) TraceStats() Stats {
	if o.tr == nil {
		return Stats{}
	}
	o.tr.mu.Lock()
	defer o.tr.mu.Unlock()
	return Stats{Events: o.tr.total, Retains: o.tr.retains, Releases: o.tr.releases, Freed: o.tr.freed}
}

// Created is when a traced object was initialized (zero when untraced).
func (o *Object) Created() time.Time {
	if o.tr == nil {
		return time.Time{}
	}
	return timeOf(o.tr.created)
}

// Goroutine returns the id of the goroutine that initialized a traced object
// and the id of the goroutine that started that one (0 when unknown,
// untraced, or made while no leaktest.Check ran and no label was bound). leaktest uses them to
// attribute objects to tests.
func (o *Object) Goroutine() (id, parent uint64) {
	if o.tr == nil {
		return 0, 0
	}
	return o.tr.goid, o.tr.parent
}

func formatTag(tag any) string {
	switch t := tag.(type) {
	case nil:
		return ""
	case Structural:
		// drvkit's structural tags say which link they are ("provider
		// USBInterface#5").
		if st, ok := t.(fmt.Stringer); ok {
			return st.String()
		}
		if ow, ok := t.(Owner); ok {
			return ow.RefObject().String()
		}
	case Owner:
		return t.RefObject().String()
	case string:
		return t
	case fmt.Stringer:
		return t.String()
	}
	// A pointer tag is known by its address: formatting what it points to
	// would read the holder's fields while their owner writes them (a data
	// race, and a report that changes with the holder's state).
	switch reflect.ValueOf(tag).Kind() {
	case reflect.Pointer, reflect.UnsafePointer, reflect.Chan:
		return fmt.Sprintf("%T(%p)", tag, tag)
	}
	return fmt.Sprintf("%T(%v)", tag, tag)
}

package driver

import (
	"sync"
	"sync/atomic"
)

// Monitored is a value written by callbacks and read by the driver, kept as
// immutable snapshots: Store publishes a fresh copy with one atomic pointer
// swap, and Load never locks and never sees half of a write. T should be a
// value type (or treated as immutable once stored: a slice or map inside T
// must not be changed after Store).
//
// A Monitored that belongs to a Group can also be read together with the
// group's other values through a View.
type Monitored[T any] struct {
	p   atomic.Pointer[T]
	g   *Group
	idx int
}

// NewMonitored returns a monitored value holding initial. g may be nil.
func NewMonitored[T any](g *Group, initial T) *Monitored[T] {
	m := &Monitored[T]{g: g}
	v := initial
	if g == nil {
		m.p.Store(&v)
		return m
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m.idx = len(g.cur.Load().vals)
	m.p.Store(&v)
	g.publishLocked(m.idx, &v)
	return m
}

// Load returns the latest snapshot. It does not lock or allocate.
func (m *Monitored[T]) Load() T { return *m.p.Load() }

// Pointer returns the latest snapshot without copying it. The snapshot is
// shared: never write through the pointer.
func (m *Monitored[T]) Pointer() *T { return m.p.Load() }

// Store publishes v.
func (m *Monitored[T]) Store(v T) {
	p := &v
	if m.g == nil {
		m.p.Store(p)
		return
	}
	m.g.mu.Lock()
	m.p.Store(p)
	m.g.publishLocked(m.idx, p)
	m.g.mu.Unlock()
}

// Update replaces the value with f(old) atomically with respect to other
// Updates and Stores. f may run more than once when ungrouped values race.
func (m *Monitored[T]) Update(f func(T) T) {
	if m.g != nil {
		m.g.mu.Lock()
		v := f(*m.p.Load())
		m.p.Store(&v)
		m.g.publishLocked(m.idx, &v)
		m.g.mu.Unlock()
		return
	}
	for {
		old := m.p.Load()
		v := f(*old)
		if m.p.CompareAndSwap(old, &v) {
			return
		}
	}
}

// Group ties monitored values together so that a View reads all of them as
// of one instant. Writers to a group serialize on a mutex; readers never
// lock: a View is one atomic load of the group's current version, a vector
// of snapshot pointers that is itself copied on write.
type Group struct {
	mu  sync.Mutex
	cur atomic.Pointer[View]
}

// NewGroup returns an empty group.
func NewGroup() *Group {
	g := &Group{}
	g.cur.Store(&View{g: g})
	return g
}

// View is a consistent snapshot of every value in a group. It never
// changes: a condition evaluated on a View stays true for as long as the
// View is used (the sequencer's "safe mode").
type View struct {
	g       *Group // whose view it is: Get refuses another group's values
	version uint64
	vals    []any // *T per member, by index
}

func (g *Group) publishLocked(idx int, p any) {
	old := g.cur.Load()
	n := len(old.vals)
	if idx >= n {
		n = idx + 1
	}
	vals := make([]any, n)
	copy(vals, old.vals)
	vals[idx] = p
	g.cur.Store(&View{g: g, version: old.version + 1, vals: vals})
}

// View returns the group's current snapshot. It does not lock or allocate.
func (g *Group) View() *View { return g.cur.Load() }

// Version increases with every Store to the group.
func (v *View) Version() uint64 { return v.version }

// Get reads m's value in view v. m must belong to the view's group: Get
// panics otherwise, as Set does (the index of a value of another group
// would silently name a different variable).
func Get[T any](v *View, m *Monitored[T]) T {
	return *GetPointer(v, m)
}

// GetPointer is Get without the copy; never write through the pointer.
func GetPointer[T any](v *View, m *Monitored[T]) *T {
	if m.g != v.g {
		panic(misusedGroup("Get", m.g))
	}
	return v.vals[m.idx].(*T)
}

func misusedGroup(op string, g *Group) string {
	if g == nil {
		return "driver: " + op + " on a value that belongs to no group (NewMonitored with a nil group)"
	}
	return "driver: " + op + " on a value of another group"
}

// When evaluates cond on one view and, if it holds, runs action on the same
// view: what the condition saw is what the action sees, however the values
// change meanwhile. It reports whether action ran.
func (g *Group) When(cond func(*View) bool, action func(*View)) bool {
	v := g.View()
	if !cond(v) {
		return false
	}
	action(v)
	return true
}

// Tx collects the stores of one Group.Update.
type Tx struct {
	g    *Group
	vals []any
	sets []func()
}

// Set stores v into m as part of tx; m must belong to tx's group.
func Set[T any](tx *Tx, m *Monitored[T], v T) {
	if m.g != tx.g {
		panic(misusedGroup("Set", m.g))
	}
	p := &v
	tx.vals[m.idx] = p
	tx.sets = append(tx.sets, func() { m.p.Store(p) })
}

// Update applies f's stores to several values of g at once: a View sees
// all of them or none.
func (g *Group) Update(f func(tx *Tx)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cur.Load()
	tx := &Tx{g: g, vals: append([]any(nil), old.vals...)}
	f(tx)
	g.cur.Store(&View{g: g, version: old.version + 1, vals: tx.vals})
	for _, s := range tx.sets {
		s()
	}
}

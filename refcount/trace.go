package refcount

import (
	"fmt"
	"sync"
)

// Holding is one outstanding holder of an object: a tag (or the untagged
// holder, Tag == "") with its count and the distinct stacks of its
// unmatched retains.
type Holding struct {
	Tag    string
	Owner  *Object // non-nil when the tag is an Owner: an ownership edge
	Count  int
	Stacks []Stack
}

// tracked is the per-object trace state of a traced object.
type tracked struct {
	obj     *Object
	mu      sync.Mutex
	holders map[any]*holding
}

type holding struct {
	count  int
	stacks []Stack
}

var (
	traceMu  sync.RWMutex
	traceAll bool
	traceSet map[string]bool
)

// TraceAll turns tracing on for every class. Objects initialized from now on
// are traced; whether an object is traced is fixed at Init.
func TraceAll() {
	traceMu.Lock()
	traceAll, traceSet = true, nil
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
	traceMu.Unlock()
}

// TraceOff turns tracing off for objects initialized from now on.
func TraceOff() {
	traceMu.Lock()
	traceAll, traceSet = false, nil
	traceMu.Unlock()
}

func tracingEnabled(class string) bool {
	traceMu.RLock()
	defer traceMu.RUnlock()
	return traceAll || traceSet[class]
}

func newTracked(o *Object) *tracked {
	t := &tracked{obj: o, holders: map[any]*holding{}}
	t.holders[nil] = &holding{count: 1, stacks: []Stack{captureStack(3)}}
	return t
}

func (t *tracked) retained(tag any, n int32) {
	t.mu.Lock()
	h := t.holders[tag]
	if h == nil {
		h = &holding{}
		t.holders[tag] = h
	}
	h.count++
	h.stacks = append(h.stacks, captureStack(4))
	t.mu.Unlock()
	_ = n
}

// released records a release and reports whether the object must be freed.
func (t *tracked) released(tag any, n int32) bool {
	t.mu.Lock()
	h := t.holders[tag]
	if h == nil || h.count == 0 {
		t.mu.Unlock()
		t.obj.refs.Add(1)
		report(&Error{Kind: ErrTagMismatch, ID: t.obj.id, Class: t.obj.class, Tag: formatTag(tag), Offender: captureStack(3)})
		return false
	}
	h.count--
	h.stacks = h.stacks[:len(h.stacks)-1]
	if h.count == 0 {
		delete(t.holders, tag)
	}
	t.mu.Unlock()
	return n == 0
}

// Holders returns o's outstanding holders. It is exact for a traced object
// and nil for an untraced one.
func (o *Object) Holders() []Holding {
	if o.tr == nil {
		return nil
	}
	o.tr.mu.Lock()
	defer o.tr.mu.Unlock()
	var out []Holding
	for tag, h := range o.tr.holders {
		hd := Holding{Tag: formatTag(tag), Count: h.count, Stacks: append([]Stack(nil), h.stacks...)}
		if ow, ok := tag.(Owner); ok {
			hd.Owner = ow.RefObject()
		}
		out = append(out, hd)
	}
	return out
}

func formatTag(tag any) string {
	switch t := tag.(type) {
	case nil:
		return ""
	case Owner:
		return t.RefObject().String()
	case string:
		return t
	case fmt.Stringer:
		return t.String()
	}
	return fmt.Sprintf("%T(%v)", tag, tag)
}

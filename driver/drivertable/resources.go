package drivertable

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ErrNoResource: the host does not provide a resource a driver needs.
var ErrNoResource = errors.New("not provided by this daemon")

// Key names a resource of type T that a host provides to drivers. Declare
// one per resource, in the package that owns T.
type Key[T any] struct{ name string }

// NewKey returns the key of the resource called name ("usb", "sg").
func NewKey[T any](name string) Key[T] { return Key[T]{name: name} }

// Name is the resource's name, as Entry.Needs lists it.
func (k Key[T]) Name() string { return k.name }

// From returns the resource, creating it on first use.
func (k Key[T]) From(r *Resources) (T, error) {
	var zero T
	v, err := r.get(k.name)
	if err != nil {
		return zero, err
	}
	t, ok := v.(T)
	if !ok {
		return zero, &OpError{Op: "wire", Name: k.name, Err: fmt.Errorf("provided a %T, want a %T", v, zero)}
	}
	return t, nil
}

// Resources is what a host wires for drivers: each resource made by its
// provider once, on first use, so a daemon loading no USB driver never
// opens the USB backend.
type Resources struct {
	mu      sync.Mutex
	provide map[string]func() (any, error)
	made    map[string]any
}

// NewResources returns an empty set of providers.
func NewResources() *Resources {
	return &Resources{provide: map[string]func() (any, error){}, made: map[string]any{}}
}

// Provide registers how r makes the resource of k. Providing a key twice
// replaces the provider of a resource not made yet.
func Provide[T any](r *Resources, k Key[T], f func() (T, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.provide[k.name] = func() (any, error) { return f() }
}

// Has reports whether r can provide the resource called name.
func (r *Resources) Has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.provide[name]
	return ok
}

// Names lists the resources r can provide, sorted.
func (r *Resources) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.provide))
	for n := range r.provide {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r *Resources) get(name string) (any, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v, ok := r.made[name]; ok {
		return v, nil
	}
	f, ok := r.provide[name]
	if !ok {
		return nil, &OpError{Op: "wire", Name: name, Err: ErrNoResource}
	}
	// Under the lock: two drivers asking at once get the one resource.
	v, err := f()
	if err != nil {
		return nil, &OpError{Op: "wire", Name: name, Err: err}
	}
	r.made[name] = v
	return v, nil
}

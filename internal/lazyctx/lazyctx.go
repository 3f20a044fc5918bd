package lazyctx

import (
	"context"
	"sync"
	"time"
)

// Context is a cancellable context that follows its parent lazily. Embed
// it by value (Init sets the parent) or make one with New.
type Context struct {
	parent context.Context
	mu     sync.Mutex
	done   chan struct{} // made by Done or AfterFunc, closed by cancel
	err    error
	stop   func() bool // following the parent
	funcs  map[*afterCall]struct{}
}

// afterCall is a function registered with Context.AfterFunc.
type afterCall struct{ f func() }

var _ context.Context = (*Context)(nil)

// New returns a Context ending with parent or its own Cancel.
func New(parent context.Context) *Context { return &Context{parent: parent} }

// Init sets the parent of a Context embedded by value, before first use.
func (c *Context) Init(parent context.Context) { c.parent = parent }

func (c *Context) Deadline() (time.Time, bool) { return c.parent.Deadline() }
func (c *Context) Value(key any) any           { return c.parent.Value(key) }

func (c *Context) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.followLocked()
	return c.done
}

// followLocked makes done, and has the parent's end cancel c.
func (c *Context) followLocked() {
	if c.done != nil {
		return
	}
	c.done = make(chan struct{})
	if c.err != nil {
		close(c.done)
		return
	}
	if c.parent.Done() != nil {
		c.stop = context.AfterFunc(c.parent, func() { c.Cancel(c.parent.Err()) })
	}
}

// Err is nil until Done is closed, as for any context: a parent that has
// ended ends c first.
func (c *Context) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if perr := c.parent.Err(); perr != nil {
		return c.Cancel(perr)
	}
	return nil
}

// AfterFunc is what context.WithCancel and context.AfterFunc use on a
// parent that is not one of theirs (instead of a goroutine per derived
// context): f runs in its own goroutine once c ends.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.followLocked()
	a := &afterCall{f: f}
	if c.funcs == nil {
		c.funcs = make(map[*afterCall]struct{})
	}
	c.funcs[a] = struct{}{}
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.funcs[a]
		delete(c.funcs, a)
		return ok
	}
}

// Cancel ends c with err unless it has ended, and returns why it ended.
func (c *Context) Cancel(err error) error {
	c.mu.Lock()
	if c.err != nil {
		err = c.err
		c.mu.Unlock()
		return err
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	stop, funcs := c.stop, c.funcs
	c.stop, c.funcs = nil, nil
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	for a := range funcs {
		go a.f()
	}
	return err
}

// End cancels c with context.Canceled: what it started to follow its
// parent stops. A context.CancelFunc.
func (c *Context) End() { c.Cancel(context.Canceled) }

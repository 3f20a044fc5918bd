package hotplug

import (
	"context"
	"sync"
)

// Coldplug is a Source of the devices already present: one add event per
// device found under the sysfs root, parents before children, then io.EOF.
type Coldplug struct {
	mu     sync.Mutex
	events []Event
	closed bool
}

var _ Source = (*Coldplug)(nil)

// NewColdplug walks the sysfs root (DefaultSysfsRoot if "") for classes
// (ClassesOf the buses to publish; nil is ErrNoClasses) now and returns a
// source replaying the result.
func NewColdplug(root string, classes []Class) (*Coldplug, error) {
	if root == "" {
		root = DefaultSysfsRoot
	}
	evs, err := Walk(root, classes, OriginColdplug)
	if err != nil {
		return nil, err
	}
	return &Coldplug{events: evs}, nil
}

// Next returns the next device, or io.EOF when all were returned.
func (c *Coldplug) Next(ctx context.Context) (Event, error) {
	if err := ctx.Err(); err != nil {
		return Event{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Event{}, ErrClosed
	}
	if len(c.events) == 0 {
		return Event{}, errEOF
	}
	ev := c.events[0]
	c.events = c.events[1:]
	return ev, nil
}

// Close discards what was not read.
func (c *Coldplug) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed, c.events = true, nil
	return nil
}

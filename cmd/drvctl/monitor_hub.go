package main

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
)

// monitorHub fans kernel uevents and lifecycle steps out to `drvctl monitor`
// subscribers. Publishing never blocks: a subscriber that falls more than its
// buffer behind is dropped (its channel closed) so that a stalled monitor can
// never slow the registry.
type monitorHub struct {
	clock monoClock

	mu   sync.Mutex
	subs map[*monitorSub]struct{}
}

type monitorSub struct {
	ch      chan monitorEvent
	dropped bool
}

func newMonitorHub() *monitorHub {
	return &monitorHub{clock: newMonoClock(), subs: map[*monitorSub]struct{}{}}
}

// subscribe returns a channel of events and a cancel function. The channel is
// closed by cancel, or when the subscriber fell behind by more than buffer
// events.
func (h *monitorHub) subscribe(buffer int) (<-chan monitorEvent, func()) {
	s := &monitorSub{ch: make(chan monitorEvent, buffer)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.subs[s]; ok {
			delete(h.subs, s)
			close(s.ch)
		}
	}
}

func (h *monitorHub) publish(e monitorEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- e:
		default:
			delete(h.subs, s)
			close(s.ch)
		}
	}
}

func (h *monitorHub) lifecycle(ev driver.LifecycleEvent) {
	e := monitorEvent{Kind: "lifecycle", Time: h.clock.at(ev.Time), Step: ev.Step.String(),
		ServiceID: ev.ServiceID, Class: ev.Class, Name: ev.Name, Detail: ev.Err}
	if ev.Step == driver.StepAttach || ev.Step == driver.StepDetach {
		e.Detail = "provider " + itoa(ev.ProviderID)
	}
	h.publish(e)
}

func (h *monitorHub) kernel(ev *hotplug.Event, received time.Time) {
	e := monitorEvent{Kind: "kernel", Time: h.clock.at(received), Action: ev.Action.String(),
		Devpath: ev.DevPath, Subsystem: ev.Subsystem, Seqnum: ev.Seqnum, Env: map[string]string{}}
	for k, v := range ev.Env() {
		e.Env[k] = v
	}
	h.publish(e)
}

// monoClock turns Go times into seconds on CLOCK_MONOTONIC, the clock
// udevadm monitor prints, so our lines sort with the kernel's.
type monoClock struct {
	base  time.Time
	since float64
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{base: time.Now(), since: float64(ts.Sec) + float64(ts.Nsec)/1e9}
}

func (c monoClock) at(t time.Time) float64 { return c.since + t.Sub(c.base).Seconds() }

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

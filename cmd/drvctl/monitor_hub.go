package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
)

// monitorHub fans kernel uevents and lifecycle steps out to `drvctl monitor`
// subscribers. Subscribers must not block: the daemon's subscribers hand
// events to userclient, which disconnects a client that stops reading
// rather than waiting for it, so a stalled monitor never slows the registry.
//
// The hub also keeps the last monitorHistory events, so that a monitor
// started after the daemon (`drvctl monitor --replay`) still sees the
// devices found at coldplug and everything since.
type monitorHub struct {
	clock monoClock

	mu      sync.Mutex
	next    int
	seq     uint64
	last    monoTime // the latest time published
	subs    map[int]func(monitorEvent)
	history []monitorEvent // oldest first, at most 2*limit before trimming
	limit   int
}

// monitorHistory bounds the replay buffer: a few minutes of a busy bus, a
// few MiB at most.
const monitorHistory = 4096

func newMonitorHub() *monitorHub {
	return &monitorHub{clock: newMonoClock(), subs: map[int]func(monitorEvent){}, limit: monitorHistory}
}

// History returns the kept events, oldest first, and how many older ones
// were dropped.
func (h *monitorHub) History() (events []monitorEvent, dropped uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	events = h.history
	if len(events) > h.limit {
		events = events[len(events)-h.limit:]
	}
	events = append([]monitorEvent(nil), events...)
	if len(events) > 0 {
		dropped = events[0].Seq - 1
	}
	return events, dropped
}

// subscribe calls f for every event, in order, until cancel.
func (h *monitorHub) subscribe(f func(monitorEvent)) (cancel func()) {
	h.mu.Lock()
	id := h.next
	h.next++
	h.subs[id] = f
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.subs, id)
		h.mu.Unlock()
	}
}

// publish delivers e to every subscriber. It holds the lock while calling
// them so that each sees events in one order.
func (h *monitorHub) publish(e monitorEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	e.Seq = h.seq
	// Kernel events are timed as they are read, lifecycle steps as they
	// happen, on different goroutines: an event published after another
	// may carry an earlier time. Lines in seq order must read in time
	// order, so a time never goes back.
	if e.Time < h.last {
		e.Time = h.last
	}
	h.last = e.Time
	h.history = append(h.history, e)
	if len(h.history) >= 2*h.limit {
		// Trim in one copy per limit events, not one per event.
		h.history = append(h.history[:0:0], h.history[len(h.history)-h.limit:]...)
	}
	for _, f := range h.subs {
		f(e)
	}
}

func (h *monitorHub) lifecycle(ev driver.LifecycleEvent) {
	e := monitorEvent{Kind: "lifecycle", Time: h.clock.at(ev.Time), Step: ev.Step.String(),
		ServiceID: ev.ServiceID, Class: ev.Class, Name: ev.Name, Detail: ev.Err}
	if ev.Step == driver.StepAttach || ev.Step == driver.StepDetach {
		e.Detail = "provider " + itoa(ev.ProviderID)
		e.Provider = ev.ProviderID
	}
	if ev.Step == driver.StepProbe {
		e.Score = ev.Score
	}
	if ev.Step == driver.StepTerminate {
		e.Cause, e.RootCause = ev.Cause.Text(), ev.RootCause.Text()
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

// kernelOverflow tells monitors that the kernel dropped uevents (its
// receive buffer overflowed) and how resync repaired the view: otherwise
// a monitor would see a gap, or synthesized events, with no reason.
func (h *monitorHub) kernelOverflow(resynced int) {
	h.publish(monitorEvent{Kind: "warning", Time: h.clock.at(time.Now()), Count: uint64(resynced),
		Detail: "the kernel dropped uevents (receive buffer overflow); resynced " + itoa(uint64(resynced)) + " events from sysfs"})
}

// monoClock turns Go times into CLOCK_MONOTONIC, the clock udevadm
// monitor prints, so our lines sort with the kernel's.
type monoClock struct {
	base  time.Time
	since monoTime
}

func newMonoClock() monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return monoClock{base: time.Now(), since: monoTime(int64(ts.Sec)*1e6 + int64(ts.Nsec)/1e3)}
}

func (c monoClock) at(t time.Time) monoTime {
	return c.since + monoTime(t.Sub(c.base)/time.Microsecond)
}

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

// logMonitorEvent writes one monitor event as a debug log record.
func logMonitorEvent(log *slog.Logger, e monitorEvent) {
	switch e.Kind {
	case "kernel":
		log.LogAttrs(context.Background(), slog.LevelDebug, "uevent", slog.Uint64("seq", e.Seq),
			slog.String("action", e.Action), slog.String("devpath", e.Devpath), slog.String("subsystem", e.Subsystem))
	case "lifecycle":
		attrs := []slog.Attr{slog.Uint64("seq", e.Seq), slog.String("step", e.Step), slog.Uint64("service", e.ServiceID),
			slog.String("class", e.Class)}
		if e.Name != "" {
			attrs = append(attrs, slog.String("name", e.Name))
		}
		if e.Detail != "" {
			attrs = append(attrs, slog.String("detail", e.Detail))
		}
		log.LogAttrs(context.Background(), slog.LevelDebug, "lifecycle", attrs...)
	}
}

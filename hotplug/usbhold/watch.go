package usbhold

import (
	"errors"
	"sync"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

// watcher gives back held interfaces whose nub lost its last driver. The
// lifecycle callback only queues provider ids (it runs inside the
// registry's progress and must be quick); one goroutine looks at them.
type watcher struct {
	r      *driver.Registry
	h      *Hold
	cancel func()

	mu     sync.Mutex
	queue  []uint64
	wake   chan struct{}
	done   chan struct{}
	quit   bool
	timers map[uint64]*time.Timer // nubs looked at again while their driver is relaunched
}

// relaunchPoll is how often a held interface whose driver is being
// relaunched (Config.Relaunching) is looked at again.
const relaunchPoll = 20 * time.Millisecond

// Watch gives a held interface back to the kernel (probes it) once no
// driver instance is attached to its nub in r any more: its driver
// stopped, was unloaded, lost matching or failed to start. A nub that was
// terminated (the device went) is left to the remove event. Close stops
// the watch; Watch on a closed hold, or a second Watch, is an error.
func (h *Hold) Watch(r *driver.Registry) error {
	w := &watcher{r: r, h: h, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	if h.closed || h.watch != nil {
		h.mu.Unlock()
		return &OpError{Op: "watch", Err: errors.New("hold closed or watched already")}
	}
	h.watch = w
	h.mu.Unlock()
	w.cancel = r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Step != driver.StepDetach || e.ProviderID == 0 || h.nheld.Load() == 0 {
			return
		}
		w.enqueue(e.ProviderID)
	})
	go w.run()
	return nil
}

func (w *watcher) enqueue(id uint64) {
	w.mu.Lock()
	if w.quit {
		w.mu.Unlock()
		return
	}
	w.queue = append(w.queue, id)
	// Under the lock: stop closes wake under it too.
	select {
	case w.wake <- struct{}{}:
	default:
	}
	w.mu.Unlock()
}

// later looks at nub id again after relaunchPoll (once, however often
// asked meanwhile).
func (w *watcher) later(id uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.quit || w.timers[id] != nil {
		return
	}
	if w.timers == nil {
		w.timers = map[uint64]*time.Timer{}
	}
	w.timers[id] = time.AfterFunc(relaunchPoll, func() {
		w.mu.Lock()
		delete(w.timers, id)
		w.mu.Unlock()
		w.enqueue(id)
	})
}

func (w *watcher) run() {
	defer close(w.done)
	for range w.wake {
		for {
			w.mu.Lock()
			if w.quit {
				w.mu.Unlock()
				return
			}
			if len(w.queue) == 0 {
				w.mu.Unlock()
				break
			}
			id := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			w.check(id)
		}
	}
}

// check gives back the interface of nub id if it is held and no driver
// instance is attached to it (started or still starting).
func (w *watcher) check(id uint64) {
	nub, release, ok := w.r.Lookup(id)
	if !ok {
		return // terminated: the device is going
	}
	defer release()
	if nub.Class() != usbbus.ClassInterface || !w.h.isHeld(nub.Name()) {
		return
	}
	for _, c := range nub.Clients() {
		if c.Personality() != nil && c.State().Active {
			return
		}
	}
	if w.h.relaunching != nil && w.h.relaunching(nub) {
		// A crashed driver comes back after its backoff: still drvkit's.
		w.later(id)
		return
	}
	w.h.logErr(w.h.GiveBack(nub.Name()))
}

func (w *watcher) stop() {
	w.cancel()
	w.mu.Lock()
	w.quit = true
	for _, t := range w.timers {
		t.Stop()
	}
	w.timers = nil
	close(w.wake)
	w.mu.Unlock()
	<-w.done
}

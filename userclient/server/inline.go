package server

import (
	"sync"
	"time"
)

// Running a call on the goroutine that read it — no hand-off to another
// goroutine — is what brings a call within reach of a plain socket echo.
// The connection must still be read while a call blocks: its cancel frames
// and its other goroutines' requests must not wait for it. Two ways:
//
//   - A standby goroutine, started before the call, takes the reading over
//     if the call is still running when it gets to run. Starting a
//     goroutine wakes an idle core, though, and the thread woken then
//     competes for the socket's wake-ups with the one serving: on an idle
//     machine that costs a call about a fifth of an echo. So a standby is
//     started only where blocking is expected: the frame behind the call
//     has already arrived, or one of the connection's last blockingCalls
//     calls took quickCall or longer (a device's I/O, a driver process).
//   - Otherwise the server's inline watch, one goroutine ticking every
//     inlineTick while inline calls come, takes the reading over from a
//     call still running after a whole tick, and puts its connection in
//     blocking mode: its next blockingCalls calls have a standby, and
//     every call that blocks again restarts the count.
//
// A call that blocks on a connection with no standby is therefore read
// past within two ticks; after that, at once.
const (
	inlineTick    = 2 * time.Millisecond
	blockingCalls = 64
	quickCall     = 50 * time.Microsecond // a call that took longer counts as blocking
)

// serveInline serves call r on the reading goroutine. It reports
// whether the goroutine still owns the reading: false if it was taken
// over meanwhile, and the goroutine must leave it.
func (c *conn) serveInline(r *request) bool {
	// Decided while this goroutine still owns the reading: once the state
	// says serving, the reading may be taken over at any moment.
	standby := c.blocking.Load() > 0 || c.dec.Buffered() > 0
	gen := c.inline.Load()>>2 + 1
	c.inline.Store(gen<<2 | inlineServing)
	if standby {
		c.srv.wg.Add(1) // the reader holds a slot: the count is not zero
		go c.standby(gen)
	} else if !c.watched.Load() {
		c.srv.watch.add(c)
	}
	start := time.Now()
	c.serveRequest(r)
	if time.Since(start) >= quickCall {
		c.blocking.Store(blockingCalls)
	} else if c.blocking.Load() > 0 {
		c.blocking.Add(-1)
	}
	return c.inline.CompareAndSwap(gen<<2|inlineServing, gen<<2|inlineReading)
}

// standby takes the reading over if call gen is still running inline.
func (c *conn) standby(gen uint64) {
	defer c.srv.wg.Done()
	c.takeOver(gen)
}

// takeOver reads on for call gen's goroutine, if that call is still
// running.
func (c *conn) takeOver(gen uint64) {
	if c.inline.CompareAndSwap(gen<<2|inlineServing, gen<<2|inlineHandedOff) {
		// The connection's wg slot goes with its reading.
		c.srv.handover.Add(1)
		c.readAndFinish()
	}
}

// inlineWatch is the server's watch over calls served inline without a
// standby.
type inlineWatch struct {
	mu      sync.Mutex
	conns   map[*conn]uint64 // the connection's inline state at the last tick
	running bool
}

// add puts c in the watch, starting the watch's goroutine if it is not
// running. c is in an inline call, which holds a wg slot.
func (w *inlineWatch) add(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conns == nil {
		w.conns = make(map[*conn]uint64)
	}
	c.watched.Store(true)
	w.conns[c] = 0
	if !w.running {
		w.running = true
		c.srv.wg.Add(1)
		go c.srv.watchInline()
	}
}

// watchInline ticks while some connection serves calls inline: a call
// running for a whole tick has its connection's reading taken over. A
// connection without an inline call for a tick leaves the watch; the
// goroutine ends with the last.
func (s *Server) watchInline() {
	defer s.wg.Done()
	t := time.NewTicker(inlineTick)
	defer t.Stop()
	w := &s.watch
	for range t.C {
		w.mu.Lock()
		for c, last := range w.conns {
			v := c.inline.Load()
			w.conns[c] = v
			switch {
			case v&3 == inlineServing && v == last:
				c.blocking.Store(blockingCalls)
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					c.takeOver(v >> 2)
				}()
			case v == last:
				// Idle for a tick. Out of the watch, unless a call began
				// meanwhile: serveInline stores its state before it looks
				// at watched, so one of the two sees the other.
				c.watched.Store(false)
				if c.inline.Load() != v {
					c.watched.Store(true)
					continue
				}
				delete(w.conns, c)
			}
		}
		if len(w.conns) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

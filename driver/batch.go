package driver

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
)

// Batch is the part of a fan-out that its inline handlers leave to the
// end. MessageClients hands one, in Message.Batch, to every
// InlineMessageHandler it calls on its own goroutine, and flushes it on
// that goroutine before it returns — every 64 deliveries of a big
// fan-out, so the first clients do not wait for the last. A user client
// puts its socket write there, and the server then sends the whole
// batch's notifications with one system call.
//
// A handler may use the Batch only during its Message; one that gets none
// (nil: a message delivered from its mailbox) does its work at once.
// Whatever a handler defers runs after its callback lock is released, so
// it must keep the client's order itself (a user client holds its
// socket's write side until the flush).
type Batch struct {
	deferred []batchEntry
}

type batchEntry struct {
	key any
	f   BatchFlusher
}

// BatchFlusher is work a handler defers to a Batch's flush.
type BatchFlusher interface {
	FlushBatch()
}

// Join returns the flusher deferred in b under key, which the handlers
// of one kind share (a server's user clients use the server): the first
// handler to ask makes it with newFlusher and defers it; the others add their
// work to it.
func (b *Batch) Join(key any, newFlusher func() BatchFlusher) BatchFlusher {
	for _, e := range b.deferred {
		if e.key == key {
			return e.f
		}
	}
	f := newFlusher()
	b.deferred = append(b.deferred, batchEntry{key, f})
	return f
}

// flush runs and forgets what was deferred, in the order it was first
// deferred. A flusher that panics is logged, and the others still run: a
// server's flusher gives back the write sides its clients hold.
func (b *Batch) flush(log *slog.Logger) {
	for i := range b.deferred {
		f := b.deferred[i].f
		b.deferred[i] = batchEntry{}
		runFlusher(f, log)
	}
	b.deferred = b.deferred[:0]
}

func runFlusher(f BatchFlusher, log *slog.Logger) {
	defer func() {
		if v := recover(); v != nil {
			log.Error("batch flusher panicked", "flusher", fmt.Sprintf("%T", f), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	f.FlushBatch()
}

// batchMax is the most inline deliveries between two flushes of a
// fan-out's batch: a thousand clients are sent to in 16 system calls,
// and the first of them hear of it after 64 deliveries, not 1,000.
const batchMax = 64

var batches = sync.Pool{New: func() any { return new(Batch) }}

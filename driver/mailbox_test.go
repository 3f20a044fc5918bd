package driver_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
)

// The mailbox keeps its service alive while it delivers: it borrows the
// registry's reference (no retain, no stack per delivery when traced) and
// takes one of its own when the registry lets go in the middle of a
// delivery. Here an interest listener is still running when the service's
// termination reaches the point where the registry drops its reference:
// the service is freed only after the listener returns, and its holders
// name the mailbox meanwhile.
func TestMailboxHoldsServiceThroughTermination(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	entered, release := make(chan driver.Message, 1), make(chan struct{})
	remove := nub.AddInterest(func(m driver.Message) {
		if m.Type == driver.MessageDriverDefined {
			entered <- m
			<-release
		}
	})
	defer remove()
	before := nub.RetainCount()
	nub.Notify(driver.MessageDriverDefined, "hello")
	<-entered
	require.Equal(t, before, nub.RetainCount(), "a mailbox delivering while the registry holds the service takes no reference")

	nub.Terminate()
	// The termination runs until the registry's reference is gone; the
	// mailbox's own holds the service.
	require.Eventually(t, func() bool {
		for _, h := range nub.RefObject().Holders() {
			if h.Tag == "mailbox" {
				return true
			}
		}
		return false
	}, 10*time.Second, time.Millisecond, "the mailbox took no reference of its own")
	select {
	case <-nub.Done():
		t.Fatal("freed while its interest listener runs")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	waitFreed(t, nub)
	e.quiet()
}

// recorder is a client handler that keeps the data of the driver-defined
// messages it gets.
type recorder struct {
	mu  sync.Mutex
	got []int
}

func (r *recorder) Message(_ *driver.Service, m driver.Message) error {
	if m.Type == driver.MessageDriverDefined {
		r.mu.Lock()
		r.got = append(r.got, m.Data.(int))
		r.mu.Unlock()
	}
	return nil
}

// A stream of messages to many clients reaches every client whole and in
// order, while the mail workers take several clients at a time and the
// registry enqueues them in no set order.
func TestMessageClientsInOrderPerClient(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	const clients, msgs = 300, 40
	recs := make([]*recorder, clients)
	for i := range recs {
		recs[i] = &recorder{}
		_, err := e.r.AttachClient(nub, "FanClient", fmt.Sprint("c", i), recs[i])
		require.NoError(t, err)
	}
	for i := range msgs {
		nub.MessageClients(driver.MessageDriverDefined, i)
	}
	want := make([]int, msgs)
	for i := range want {
		want[i] = i
	}
	require.Eventually(t, func() bool {
		for _, r := range recs {
			r.mu.Lock()
			n := len(r.got)
			r.mu.Unlock()
			if n < msgs {
				return false
			}
		}
		return true
	}, 20*time.Second, time.Millisecond)
	for i, r := range recs {
		r.mu.Lock()
		require.Equal(t, want, r.got, "client %d", i)
		r.mu.Unlock()
	}
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// inlineRecorder is a recorder that promises a Message that never blocks;
// gate, when set, makes its first driver-defined message wait for it
// anyway, so that a test can hold the client's callback lock.
type inlineRecorder struct {
	recorder
	gate    chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (r *inlineRecorder) Message(s *driver.Service, m driver.Message) error {
	if r.gate != nil && m.Type == driver.MessageDriverDefined {
		r.once.Do(func() {
			close(r.entered)
			<-r.gate
		})
	}
	return r.recorder.Message(s, m)
}

func (*inlineRecorder) MessageInline() {}

var _ driver.InlineMessageHandler = (*inlineRecorder)(nil)

func (r *recorder) snapshot() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.got...)
}

// A fan-out delivers to an idle InlineMessageHandler before MessageClients
// returns (on the sender's goroutine), to the other clients through the
// pool, and every client gets every message in order.
func TestMessageClientsInline(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	const clients, msgs = 100, 20
	inline := make([]*inlineRecorder, clients)
	pooled := make([]*recorder, clients)
	for i := range clients {
		inline[i], pooled[i] = &inlineRecorder{}, &recorder{}
		_, err := e.r.AttachClient(nub, "InlineClient", fmt.Sprint("i", i), inline[i])
		require.NoError(t, err)
		_, err = e.r.AttachClient(nub, "PooledClient", fmt.Sprint("p", i), pooled[i])
		require.NoError(t, err)
	}
	want := make([]int, msgs)
	for i := range msgs {
		want[i] = i
		nub.MessageClients(driver.MessageDriverDefined, i)
		for j, r := range inline {
			require.Equal(t, want[:i+1], r.snapshot(), "inline client %d, after message %d", j, i)
		}
	}
	require.Eventually(t, func() bool {
		for _, r := range pooled {
			if len(r.snapshot()) < msgs {
				return false
			}
		}
		return true
	}, 20*time.Second, time.Millisecond)
	for i, r := range pooled {
		require.Equal(t, want, r.snapshot(), "pooled client %d", i)
	}
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// An inline client whose callback lock is busy does not hold up another
// sender: the second fan-out queues behind the first, returns at once,
// and is delivered in order when the first is done.
func TestMessageClientsInlineBusyClient(t *testing.T) {
	e := newEnv(t)
	nub, _, r := gatedInlineClient(t, e)
	first := sendAsync(nub, 0)
	<-r.entered
	returns(t, sendAsync(nub, 1), "a fan-out waited for a client busy with an earlier one")
	require.Empty(t, r.snapshot())
	close(r.gate)
	<-first
	require.Eventually(t, func() bool { return len(r.snapshot()) == 2 }, 10*time.Second, time.Millisecond)
	require.Equal(t, []int{0, 1}, r.snapshot())
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// What queues for an inline client's interest listeners is not run on a
// sender's goroutine: a listener that blocks holds up neither the sender
// nor, once it returns, the order of what follows it.
func TestMessageClientsInlineLeavesListenersToPool(t *testing.T) {
	e := newEnv(t)
	nub, c, r := gatedInlineClient(t, e)
	inListener, release := make(chan struct{}), make(chan struct{})
	remove := c.AddInterest(func(m driver.Message) {
		if m.Type == driver.MessageDriverDefined {
			close(inListener)
			<-release
		}
	})
	defer remove()
	first := sendAsync(nub, 0) // held in the handler
	<-r.entered
	c.Notify(driver.MessageDriverDefined, "to the listener")
	nub.MessageClients(driver.MessageDriverDefined, 1) // queued behind both
	close(r.gate)
	returns(t, first, "the sender ran a blocking interest listener")
	<-inListener
	require.Equal(t, []int{0}, r.snapshot(), "a message overtook the listener's")
	close(release)
	require.Eventually(t, func() bool { return len(r.snapshot()) == 2 }, 10*time.Second, time.Millisecond)
	require.Equal(t, []int{0, 1}, r.snapshot())
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// willBlocker is an inline client whose WillTerminate waits for release:
// its callback lock is held while its mailbox is idle.
type willBlocker struct {
	inlineRecorder
	willEntered, release chan struct{}
	stopped              atomic.Bool
	lateMessage          atomic.Bool // a message after Stop
}

func (w *willBlocker) WillTerminate(*driver.Service) {
	close(w.willEntered)
	<-w.release
}

func (w *willBlocker) Message(s *driver.Service, m driver.Message) error {
	if w.stopped.Load() {
		w.lateMessage.Store(true)
	}
	return w.inlineRecorder.Message(s, m)
}

func (w *willBlocker) Stop(*driver.Service) { w.stopped.Store(true) }

// An inline client whose mailbox is idle but whose callback lock is held
// (its WillTerminate runs) is not waited for by the sender: the message
// goes to a goroutine that waits for the lock, and is delivered at most
// once and never after the client's Stop; the client is freed, the trace
// keeps the contract and nothing is left behind.
func TestMessageClientsInlineClientInCallback(t *testing.T) {
	e := newEnv(t)
	nub := e.nub()
	w := &willBlocker{willEntered: make(chan struct{}), release: make(chan struct{})}
	c, err := e.r.AttachClient(nub, "InlineClient", "c", w)
	require.NoError(t, err)
	c.Terminate()
	<-w.willEntered
	returns(t, sendAsync(nub, 7), "the sender waited for a client busy in WillTerminate")
	close(w.release)
	waitFreed(t, c)
	require.LessOrEqual(t, len(w.snapshot()), 1)
	require.False(t, w.lateMessage.Load(), "a message after Stop")
	require.NoError(t, nub.TerminateSync(ctxT(t)))
	e.quiet()
}

// gatedInlineClient publishes a nub with one inline client, whose first
// driver-defined message waits for r.gate.
func gatedInlineClient(t *testing.T, e *env) (nub, c *driver.Service, r *inlineRecorder) {
	nub = e.nub()
	r = &inlineRecorder{gate: make(chan struct{}), entered: make(chan struct{})}
	c, err := e.r.AttachClient(nub, "InlineClient", "c", r)
	require.NoError(t, err)
	return nub, c, r
}

// sendAsync messages nub's clients from a goroutine of its own; the
// channel closes when MessageClients has returned.
func sendAsync(nub *driver.Service, data int) <-chan struct{} {
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		nub.MessageClients(driver.MessageDriverDefined, data)
	}()
	return sent
}

// returns fails t unless sent closes soon: the sender was not held.
func returns(t *testing.T, sent <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

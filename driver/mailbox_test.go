package driver_test

import (
	"fmt"
	"sync"
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
	nub := e.r.NewNub("TestNub", "n0", driver.NewProperties(nil))
	require.NoError(t, e.r.Publish(nil, nub))
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
	nub := e.r.NewNub("TestNub", "n0", driver.NewProperties(nil))
	require.NoError(t, e.r.Publish(nil, nub))
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

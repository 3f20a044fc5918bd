package driver_test

import (
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

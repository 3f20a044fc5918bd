package server

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
)

// A client dialled WithNotificationHandler gets every notification in its
// handler, in order, on one goroutine: driver messages, then the
// termination — with Terminated already closed when the handler hears of
// it — and the application closes from a goroutine of its own, as the
// handler must not wait for an answer. Notifications() receives nothing
// and is closed when the handle ends.
func TestNotificationHandler(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	type got struct {
		n             userclient.Notification
		terminatedYet bool
	}
	notes := make(chan got, 1024)
	closeNow := make(chan struct{})
	var inHandler sync.Mutex // held while the handler runs: it is never run twice at once
	c, err := userclient.Dial(ctx, ts.sock, userclient.WithNotificationHandler(func(h *userclient.Handle, n userclient.Notification) {
		if !inHandler.TryLock() {
			t.Error("handler called concurrently")
			return
		}
		defer inHandler.Unlock()
		term := false
		select {
		case <-h.Terminated():
			term = true
		default:
		}
		notes <- got{n, term}
		if n.Type == userclient.ServiceIsRequestingClose {
			go func() { // not here: Close waits for this goroutine
				<-closeNow // after the test's call on the terminated handle
				h.Close()
			}()
		}
	}))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	ch := h.Notifications()

	const msgs = 500
	for i := range msgs {
		ts.dev.message(fmt.Appendf(nil, "%d", i))
	}
	for i := range msgs {
		g := <-notes
		require.Equal(t, driverMsgType, g.n.Type)
		require.Equal(t, fmt.Sprint(i), string(g.n.Data))
		require.False(t, g.terminatedYet)
	}
	freed := ts.dev.terminate()
	g := <-notes
	require.Equal(t, userclient.ServiceIsTerminated, g.n.Type)
	require.True(t, g.terminatedYet, "Terminated is closed before the handler hears of the termination")
	_, err = h.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, userclient.ErrTerminated)
	close(closeNow)
	require.Equal(t, userclient.ServiceIsRequestingClose, (<-notes).n.Type)
	select {
	case <-freed:
	case <-time.After(20 * time.Second):
		t.Fatal("the termination did not end: the handler's close did not reach the server")
	}
	// The channel got nothing and is closed with the handle.
	select {
	case n, ok := <-ch:
		require.False(t, ok, "the channel got %v", n)
	case <-time.After(10 * time.Second):
		t.Fatal("Notifications() not closed after the handle ended")
	}
}

package driverproc_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// daemon is the daemon's end of a driver process run in this one (Run on
// a socketpair), speaking the protocol by hand.
type daemon struct {
	t    *testing.T
	c    *wire.Conn
	done chan error
}

// startCounter runs the counter sample under Run, through the hello and
// the start (request 1).
func startCounter(t *testing.T) *daemon {
	leaktest.Check(t)
	c, peer, err := wire.Pair()
	require.NoError(t, err)
	dc, err := wire.NewConn(peer)
	require.NoError(t, err)
	d := &daemon{t: t, c: c, done: make(chan error, 1)}
	go func() {
		d.done <- driverproc.Run(context.Background(), dc, slog.New(slog.DiscardHandler), counter.Entry)
	}()
	t.Cleanup(func() { c.Close() })

	d.send(&wire.Message{Type: wire.TypeHello, Version: wire.Version, Driver: counter.Name})
	require.Equal(t, wire.TypeHello, d.receive().Type)
	vals, types := wire.EncodeProperties(map[string]any{"idVendor": uint64(counter.VendorID), "idProduct": uint64(counter.ProductID)})
	d.send(&wire.Message{Type: wire.TypeStart, ID: 1, Driver: counter.Name,
		Personality: &wire.Personality{Name: counter.Name, Class: counter.Class, ProviderClass: "HIDDevice"},
		Nub:         &wire.Nub{ID: 7, Class: "HIDDevice", Name: "hid0", Properties: vals, Types: types}})
	r := d.receive()
	require.Equal(t, wire.TypeResult, r.Type, "start: %s %s", r.Code, r.Text)
	return d
}

func (d *daemon) send(m *wire.Message) {
	d.t.Helper()
	require.NoError(d.t, d.c.Send(m))
}

// receive returns the next answer (result or error), skipping log lines;
// after 10 s without one it fails the test.
func (d *daemon) receive() *wire.Message {
	d.t.Helper()
	stuck := time.AfterFunc(10*time.Second, func() { d.c.Close() })
	defer stuck.Stop()
	for {
		m, files, err := d.c.Receive()
		require.NoError(d.t, err, "no answer within 10 s")
		require.Empty(d.t, files)
		if m.Type != wire.TypeLog {
			return m
		}
	}
}

// stop sends the stop (request id) and waits for its answer and for Run
// to return.
func (d *daemon) stop(id uint64) {
	d.t.Helper()
	d.send(&wire.Message{Type: wire.TypeStop, ID: id, Cause: "unload"})
	r := d.receive()
	require.Equal(d.t, wire.TypeResult, r.Type)
	require.Equal(d.t, id, r.ID)
	select {
	case err := <-d.done:
		require.NoError(d.t, err)
	case <-time.After(10 * time.Second):
		d.t.Fatal("Run did not return after the stop")
	}
}

// A quick call is answered (on the reading goroutine), and calls after it
// too.
func TestCallAnswered(t *testing.T) {
	d := startCounter(t)
	for id := uint64(2); id < 10; id++ {
		d.send(&wire.Message{Type: wire.TypeCall, ID: id, Method: "echo", Data: []byte("ping")})
		r := d.receive()
		require.Equal(t, wire.TypeResult, r.Type, "%s: %s", r.Code, r.Text)
		require.Equal(t, id, r.ID)
		require.Equal(t, "ping", string(r.Data))
	}
	d.stop(10)
}

// A call that blocks does not keep the process from reading: a cancel
// behind it reaches it, and other calls are answered meanwhile.
func TestSlowCallCancelled(t *testing.T) {
	d := startCounter(t)
	d.send(&wire.Message{Type: wire.TypeCall, ID: 2, Method: "wait"})
	d.send(&wire.Message{Type: wire.TypeCall, ID: 3, Method: "echo", Data: []byte("meanwhile")})
	r := d.receive()
	require.Equal(t, uint64(3), r.ID, "the echo behind the waiting call is answered first")
	require.Equal(t, "meanwhile", string(r.Data))
	d.send(&wire.Message{Type: wire.TypeCancel, ID: 2})
	r = d.receive()
	require.Equal(t, wire.TypeError, r.Type)
	require.Equal(t, uint64(2), r.ID)
	require.Equal(t, wire.CodeCancelled, r.Code)
	d.send(&wire.Message{Type: wire.TypeCall, ID: 4, Method: "echo", Data: []byte("after")})
	r = d.receive()
	require.Equal(t, uint64(4), r.ID)
	require.Equal(t, "after", string(r.Data))
	d.stop(5)
}

// A stop behind a blocked call is read: the call is cancelled by the
// instance's termination, and the stop answered.
func TestStopDuringSlowCall(t *testing.T) {
	d := startCounter(t)
	d.send(&wire.Message{Type: wire.TypeCall, ID: 2, Method: "wait"})
	d.send(&wire.Message{Type: wire.TypeStop, ID: 3, Cause: "unplug"})
	// Both are answered, in either order: the stop waits for the call to
	// return, not for its answer to be sent.
	got := map[uint64]*wire.Message{}
	for range 2 {
		r := d.receive()
		got[r.ID] = r
	}
	require.Equal(t, wire.TypeError, got[2].Type, "the waiting call is cancelled")
	// cancelled; or refused, if the stop's termination came before the
	// call had begun (the standby may read the stop at once).
	require.Contains(t, []string{wire.CodeCancelled, wire.CodeFailed}, got[2].Code, got[2].Text)
	require.Equal(t, wire.TypeResult, got[3].Type, "the stop is answered")
	select {
	case err := <-d.done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the stop")
	}
}

// Several blocked calls hand the reading on from one standby to the next;
// each is cancelled by its own cancel, and the loop still ends cleanly.
func TestNestedHandOffs(t *testing.T) {
	d := startCounter(t)
	for id := uint64(2); id < 6; id++ {
		d.send(&wire.Message{Type: wire.TypeCall, ID: id, Method: "wait"})
	}
	for id := uint64(5); id >= 2; id-- {
		d.send(&wire.Message{Type: wire.TypeCancel, ID: id})
		r := d.receive()
		require.Equal(t, id, r.ID)
		require.Equal(t, wire.CodeCancelled, r.Code)
	}
	d.stop(6)
}

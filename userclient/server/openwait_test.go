package server

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// watchers is how many opens wait on the registry backend (tests).
func (ts *testServer) watchers() int {
	b := ts.Server.backend.(*RegistryBackend)
	b.wmu.Lock()
	defer b.wmu.Unlock()
	return b.watchers
}

// requireStillWaiting checks that an OpenWait has not returned yet. It
// cannot prove that it will not; it catches one that returns early.
func requireStillWaiting(t *testing.T, ts *testServer, done <-chan openResult) {
	t.Helper()
	require.Eventually(t, func() bool { return ts.watchers() == 1 }, cancelWait, time.Millisecond, "the open never waited")
	select {
	case r := <-done:
		t.Fatalf("OpenWait returned before its service existed: %v, %v", r.h, r.err)
	case <-time.After(20 * time.Millisecond):
	}
}

type openResult struct {
	h   *userclient.Handle
	err error
}

func openWait(ctx context.Context, c *userclient.Client, m userclient.Match) <-chan openResult {
	done := make(chan openResult, 1)
	go func() {
		h, err := c.OpenWait(ctx, m)
		done <- openResult{h, err}
	}()
	return done
}

// An application waiting for a device gets it when it is plugged — after
// its driver has started — without polling, over the socket and embedded.
func TestOpenWaitForPlug(t *testing.T) {
	for _, mode := range clientModes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			ctx := context.Background()
			c := ts.client(t, mode)
			// Matches at once, as Open.
			h0, err := c.OpenWait(ctx, userclient.Match{Class: "TestDevice"})
			require.NoError(t, err)
			require.Equal(t, ts.dev.ID(), h0.Service().ID)

			done := openWait(ctx, c, userclient.Match{Class: "LateDevice"})
			requireStillWaiting(t, ts, done)
			// Another device arriving does not end the wait.
			other := ts.reg.publish(t, "OtherDevice", "other0")
			requireStillWaiting(t, ts, done)

			late := ts.reg.publish(t, "LateDevice", "late0")
			var r openResult
			select {
			case r = <-done:
			case <-time.After(cancelWait):
				t.Fatal("OpenWait did not return when its device arrived")
			}
			require.NoError(t, r.err)
			require.Equal(t, late.ID(), r.h.Service().ID)
			out, err := r.h.Call(ctx, "echo", []byte("late"))
			require.NoError(t, err)
			require.Equal(t, []byte("late"), out)
			require.Zero(t, ts.watchers(), "nobody waits: the lifecycle stream is let go")
			require.Zero(t, ts.inflight())

			for _, h := range []*userclient.Handle{h0, r.h} {
				require.NoError(t, h.Close())
				ts.reg.waitFreed(t, h.ClientID())
				ts.reg.checkTrace(t, h.ClientID())
			}
			for _, d := range []*testDevice{late, other} {
				<-d.terminate()
			}
			ts.reg.rec.CheckPartial(t)
		})
	}
}

// A driver still in Start is waited for, not opened: OpenWait returns once
// Start has returned.
func TestOpenWaitForStart(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	d, nub, published := plugSlowStart(t, ts)

	c := ts.dial(t)
	done := openWait(ctx, c, userclient.Match{Class: "SlowDevice"})
	requireStillWaiting(t, ts, done)
	close(d.release)
	require.NoError(t, <-published)
	r := <-done
	require.NoError(t, r.err)
	require.True(t, nub.Clients()[0].State().Started)
	out, err := r.h.Call(ctx, "echo", []byte("ready"))
	require.NoError(t, err)
	require.Equal(t, []byte("ready"), out)
	require.NoError(t, r.h.Close())
	ts.reg.waitFreed(t, r.h.ClientID())
	require.NoError(t, nub.TerminateSync(ctx))
	ts.reg.rec.CheckPartial(t)
}

// Giving up: the caller returns at once, the daemon stops waiting (no
// request, watcher or user client left), and the connection carries on. A
// connection that ends while an open waits leaves nothing either.
func TestOpenWaitCancelled(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	c := ts.dial(t)
	cctx, cancel := context.WithCancel(ctx)
	done := openWait(cctx, c, userclient.Match{Class: "NeverDevice"})
	requireStillWaiting(t, ts, done)
	cancel()
	r := <-done
	require.ErrorIs(t, r.err, context.Canceled)
	require.Eventually(t, func() bool { return ts.watchers() == 0 && ts.inflight() == 0 },
		cancelWait, time.Millisecond, "watchers %d, inflight %d", ts.watchers(), ts.inflight())
	require.Zero(t, ts.reg.liveClients())
	require.NoError(t, c.Ping(ctx))

	// A deadline is a cancel too.
	dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer dcancel()
	_, err := c.OpenWait(dctx, userclient.Match{Class: "NeverDevice"})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	c2 := ts.dial(t)
	done = openWait(ctx, c2, userclient.Match{Class: "NeverDevice"})
	requireStillWaiting(t, ts, done)
	require.NoError(t, c2.Close())
	r = <-done
	require.ErrorIs(t, r.err, userclient.ErrClosed)
	require.Eventually(t, func() bool { return ts.watchers() == 0 }, cancelWait, time.Millisecond)
	require.NoError(t, c.Ping(ctx))
}

// What cannot become openable by waiting is answered at once: a match the
// policy refuses, an empty match; and a version 1 connection never waits.
func TestOpenWaitAnswersAtOnce(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), cancelWait)
	defer cancel()
	// The tests run as root, whom the policy always admits: a connection
	// of another user, as the server would have it after the handshake.
	nobody := &conn{srv: ts.Server, cred: userclient.Cred{UID: 65534, GID: 65534}, version: 2}
	_, _, err := nobody.openWaiting(ctx, wire.OpenMsg{Match: userclient.Match{Class: "TestDevice"}, Wait: true})
	require.ErrorIs(t, err, userclient.ErrPermission)
	_, err = ts.dial(t).OpenWait(ctx, userclient.Match{})
	require.ErrorIs(t, err, userclient.ErrNoService)
	require.NoError(t, ctx.Err(), "answered, not timed out")
	require.Zero(t, ts.watchers())

	r := rawHandshake(t, ts, "[1]")
	r.send(t, rawFrame(t, wire.TypeOpen, 2, `{"match":{"class":"NeverDevice"},"wait":true}`, nil))
	f := r.next(t)
	require.Equal(t, wire.TypeError, f.Type)
	var e wire.ErrorMsg
	require.NoError(t, json.Unmarshal(f.Control, &e))
	require.Equal(t, wire.CodeNoService, e.Code)
}

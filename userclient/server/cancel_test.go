package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// Generous: these waits assert that something happens, not how fast.
const cancelWait = 20 * time.Second

func waitEntered(t testing.TB, ts *testServer) {
	t.Helper()
	select {
	case m := <-ts.reg.entered:
		require.Equal(t, "block", m)
	case <-time.After(cancelWait):
		t.Fatal("the driver method was never entered")
	}
}

// waitLeft waits for a "block" call to return and checks why it did.
func waitLeft(t testing.TB, ts *testServer, want error) {
	t.Helper()
	select {
	case err := <-ts.reg.left:
		require.ErrorIs(t, err, want)
	case <-time.After(cancelWait):
		t.Fatal("the driver method's context was never cancelled")
	}
}

// inflight counts the cancellable requests the server tracks.
func (ts *testServer) inflight() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for c := range ts.conns {
		n += c.inflightLen()
	}
	return n
}

// An application that cancels a call cancels the driver method's context;
// the connection, other handles and other connections are unaffected, the
// service is idle again and terminates without waiting for anything.
func TestCancelReachesDriver(t *testing.T) {
	for _, mode := range clientModes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			ctx := context.Background()
			c := ts.client(t, mode)
			require.Equal(t, wire.Version, c.Version())
			h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
			require.NoError(t, err)
			h2, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
			require.NoError(t, err)
			oh, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
			require.NoError(t, err)

			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := h.Call(cctx, "block", nil)
				errc <- err
			}()
			waitEntered(t, ts)
			require.Equal(t, 1, ts.dev.State().Busy)
			require.Equal(t, 1, ts.inflight())
			cancel()
			err = <-errc
			require.ErrorIs(t, err, context.Canceled)
			require.NotErrorIs(t, err, userclient.ErrClosed)
			waitLeft(t, ts, context.Canceled)
			require.Eventually(t, func() bool { return ts.dev.State().Busy == 0 && ts.inflight() == 0 },
				cancelWait, time.Millisecond, "busy %d, inflight %d", ts.dev.State().Busy, ts.inflight())

			for i, hh := range []*userclient.Handle{h, h2, oh} {
				out, err := hh.Call(ctx, "echo", []byte{byte(i)})
				require.NoError(t, err)
				require.Equal(t, []byte{byte(i)}, out)
			}
			require.NoError(t, c.Ping(ctx))
			select {
			case err := <-c.Done():
				t.Fatalf("connection ended: %v", err)
			default:
			}

			for _, hh := range []*userclient.Handle{h, h2, oh} {
				require.NoError(t, hh.Close())
				ts.reg.waitFreed(t, hh.ClientID())
				ts.reg.checkTrace(t, hh.ClientID())
			}
			// Nothing the application abandoned holds the service up.
			tctx, tcancel := context.WithTimeout(ctx, cancelWait)
			defer tcancel()
			require.NoError(t, ts.dev.nub.TerminateSync(tctx))
			ts.reg.rec.CheckPartial(t)
		})
	}
}

// Many calls cancelled at once, with more callers than the server's
// in-flight limit: every method sees its cancel (none is stuck behind a
// request the server does not read), and the limit is kept by the client.
func TestCancelAtInflightLimit(t *testing.T) {
	const limit, callers = 2, 5
	ts := newTestServer(t, Config{MaxInflight: limit})
	ctx := context.Background()
	c := ts.dial(t)
	require.Equal(t, limit, c.MaxInflight(), "the server announces its limit")
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)

	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, callers)
	for range callers {
		go func() {
			_, err := h.Call(cctx, "block", nil)
			errc <- err
		}()
	}
	for range limit {
		waitEntered(t, ts)
	}
	require.Equal(t, limit, ts.inflight())
	cancel()
	for range callers {
		require.ErrorIs(t, <-errc, context.Canceled)
	}
	waitLeft(t, ts, context.Canceled)
	waitLeft(t, ts, context.Canceled)
	require.Eventually(t, func() bool { return ts.dev.State().Busy == 0 && ts.inflight() == 0 },
		cancelWait, time.Millisecond)
	// A waiting caller that got a slot in the instant its context ended
	// may have sent its call: it was cancelled like the others.
	require.Equal(t, len(ts.reg.entered), len(ts.reg.left))
	for len(ts.reg.left) > 0 {
		require.ErrorIs(t, <-ts.reg.left, context.Canceled)
	}
	// Every cancelled call gave its slot back on the client: limit calls
	// reach the driver together again (a lost slot would keep one waiting
	// on the client for good).
	cctx, cancel = context.WithCancel(ctx)
	for range limit {
		go func() {
			_, err := h.Call(cctx, "block", nil)
			errc <- err
		}()
	}
	for range limit {
		waitEntered(t, ts)
	}
	cancel()
	for range limit {
		require.ErrorIs(t, <-errc, context.Canceled)
		waitLeft(t, ts, context.Canceled)
	}
	out, err := h.Call(ctx, "echo", []byte("after"))
	require.NoError(t, err)
	require.Equal(t, "after", string(out))
	require.NoError(t, h.Close())
	ts.reg.waitFreed(t, h.ClientID())
	ts.reg.checkTrace(t, h.ClientID())
}

// Admin requests can block (terminate and unload wait): cancelling one
// cancels the admin handler's context.
func TestCancelAdmin(t *testing.T) {
	entered := make(chan struct{}, 1)
	left := make(chan error, 1)
	ts := newTestServer(t, Config{Admin: func(ctx context.Context, _ userclient.Cred, op string, _ json.RawMessage, _ []byte) (any, []byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		left <- ctx.Err()
		return nil, nil, ctx.Err()
	}})
	c := ts.dial(t)
	cctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Admin(cctx, userclient.AdminUnload, map[string]string{"driver": "x"}, nil)
		errc <- err
	}()
	<-entered
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	select {
	case err := <-left:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(cancelWait):
		t.Fatal("the admin handler's context was never cancelled")
	}
	require.NoError(t, c.Ping(context.Background()))
	require.Eventually(t, func() bool { return ts.inflight() == 0 }, cancelWait, time.Millisecond)
}

// rawV2 is a hand-driven version 2 connection.
type rawV2 struct {
	nc net.Conn
	d  *wire.Decoder
}

func rawHandshake(t testing.TB, ts *testServer, versions string) *rawV2 {
	t.Helper()
	nc := rawDial(t, ts.sock)
	_, err := nc.Write(rawFrame(t, wire.TypeHello, 1, `{"protocol":"drvkit-userclient","versions":`+versions+`}`, nil))
	require.NoError(t, err)
	r := &rawV2{nc: nc, d: wire.NewDecoder(nc, 0)}
	f := r.next(t)
	require.Equal(t, wire.TypeWelcome, f.Type)
	return r
}

func (r *rawV2) send(t testing.TB, frames ...[]byte) {
	t.Helper()
	_, err := r.nc.Write(bytes.Join(frames, nil))
	require.NoError(t, err)
}

func (r *rawV2) next(t testing.TB) wire.Frame {
	t.Helper()
	require.NoError(t, r.nc.SetReadDeadline(time.Now().Add(cancelWait)))
	f, err := r.d.ReadFrame()
	require.NoError(t, err)
	f.Control, f.Data = clone(f.Control), clone(f.Data)
	return f
}

func cancelFrame(t testing.TB, id uint64) []byte { return rawFrame(t, wire.TypeCancel, id, "", nil) }

// The wire semantics: one answer per request, cancelled or not; cancels of
// unknown or finished ids are ignored, however many.
func TestCancelWire(t *testing.T) {
	ts := newTestServer(t, Config{MaxInflight: 4})
	r := rawHandshake(t, ts, "[1,2]")
	r.send(t, rawFrame(t, wire.TypeOpen, 2, `{"match":{"class":"TestDevice"}}`, nil))
	f := r.next(t)
	require.Equal(t, wire.TypeReply, f.Type)
	var rep wire.OpenReply
	require.NoError(t, json.Unmarshal(f.Control, &rep))
	call := func(id uint64, method string) []byte {
		return rawFrame(t, wire.TypeCall, id, fmt.Sprintf(`{"handle":%d,"method":%q}`, rep.Handle, method), nil)
	}

	// A cancelled call is answered once, with cancelled.
	r.send(t, call(3, "block"))
	waitEntered(t, ts)
	r.send(t, cancelFrame(t, 3))
	waitLeft(t, ts, context.Canceled)
	f = r.next(t)
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, uint64(3), f.ID)
	err := wire.DecodeError(f.Control)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualError(t, err, `call "block" cancelled by the client: context canceled`)

	// Cancels of that finished id, of ids never used, of a ping: ignored.
	// A flood of them neither disconnects nor stores anything.
	var flood [][]byte
	flood = append(flood, cancelFrame(t, 3))
	for i := range 20000 {
		flood = append(flood, cancelFrame(t, uint64(1000+i)))
	}
	flood = append(flood, rawFrame(t, wire.TypePing, 4, "", []byte("p")), cancelFrame(t, 4), call(5, "echo"))
	r.send(t, flood...)
	got := map[uint64]wire.Frame{}
	for range 2 {
		f := r.next(t)
		got[f.ID] = f
	}
	require.Equal(t, wire.TypeReply, got[4].Type)
	require.Equal(t, "p", string(got[4].Data))
	require.Equal(t, wire.TypeReply, got[5].Type)
	require.Equal(t, 0, ts.inflight())

	// A cancel that crosses the answer (the method ignores its context
	// or finished first) is ignored too, and once answered the id may be
	// used again.
	r.send(t, call(6, "echo"), cancelFrame(t, 6))
	f = r.next(t)
	require.Equal(t, wire.TypeReply, f.Type, "%s", f.Control)
	require.Equal(t, uint64(6), f.ID)
	r.send(t, call(6, "echo"), rawFrame(t, wire.TypePing, 7, "", nil))
	ids := map[uint64]int{}
	for range 2 {
		f := r.next(t)
		require.Equal(t, wire.TypeReply, f.Type, "%s", f.Control)
		ids[f.ID]++
	}
	require.Equal(t, map[uint64]int{6: 1, 7: 1}, ids)

	// Every slot busy: the cancel is still read.
	r.send(t, call(8, "block"), call(9, "block"), call(10, "block"), call(11, "block"))
	for range 4 {
		waitEntered(t, ts)
	}
	require.Equal(t, 4, ts.inflight(), "one entry per request in flight, no more than the limit")
	r.send(t, cancelFrame(t, 10), cancelFrame(t, 8), cancelFrame(t, 11), cancelFrame(t, 9))
	ids = map[uint64]int{}
	for range 4 {
		f := r.next(t)
		require.Equal(t, wire.TypeError, f.Type)
		require.ErrorIs(t, wire.DecodeError(f.Control), context.Canceled)
		ids[f.ID]++
		waitLeft(t, ts, context.Canceled)
	}
	require.Equal(t, map[uint64]int{8: 1, 9: 1, 10: 1, 11: 1}, ids)
	require.Eventually(t, func() bool { return ts.dev.State().Busy == 0 && ts.inflight() == 0 }, cancelWait, time.Millisecond)

	r.send(t, rawFrame(t, wire.TypeClose, 12, fmt.Sprintf(`{"handle":%d}`, rep.Handle), nil))
	require.Equal(t, wire.TypeReply, r.next(t).Type)
	ts.reg.waitFreed(t, rep.Client)
	ts.reg.checkTrace(t, rep.Client)
}

// A cancel for an id nobody knows costs the server no memory.
func TestCancelUnknownAllocatesNothing(t *testing.T) {
	c := &conn{inflight: map[uint64]*inflightReq{}}
	id := uint64(0)
	require.Zero(t, testing.AllocsPerRun(1000, func() { id++; c.cancelRequest(id) }))
	require.Empty(t, c.inflight)
}

// badCancel is a cancel frame with what no cancel may carry, encoded by
// hand (AppendFrame refuses it).
func badCancel(t testing.TB, id uint64, ctl string, data []byte) []byte {
	b := rawFrame(t, wire.TypePing, id, ctl, data)
	b[4] = byte(wire.TypeCancel)
	return b
}

func TestCancelHostile(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	good := ts.dial(t)
	gh, err := good.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	hello := func(v string) []byte {
		return rawFrame(t, wire.TypeHello, 1, `{"protocol":"drvkit-userclient","versions":`+v+`}`, nil)
	}
	block := rawFrame(t, wire.TypeCall, 5, `{"handle":1,"method":"block"}`, nil)
	open := rawFrame(t, wire.TypeOpen, 2, `{"match":{"class":"TestDevice"}}`, nil)
	for _, tc := range []struct {
		name         string
		send         [][]byte
		detail       string
		enteredCalls int // "block" calls the test sends after an open
	}{
		{"cancel with control", [][]byte{hello("[2]"), badCancel(t, 3, `{"id":3}`, nil)}, "cancel frame carries 8 bytes of payload, want none", 0},
		{"cancel with data", [][]byte{hello("[2]"), badCancel(t, 3, "", []byte{0, 0, 0, 3})}, "cancel frame carries 4 bytes of payload", 0},
		{"cancel of id 0", [][]byte{hello("[2]"), badCancel(t, 0, "", nil)}, "cancel frame names request id 0", 0},
		{"cancel on version 1", [][]byte{hello("[1]"), cancelFrame(t, 3)}, "cancel frames need protocol version 2, this connection speaks 1", 0},
		{"cancel before hello", [][]byte{cancelFrame(t, 3)}, "first frame is cancel, want hello", 0},
		{"duplicate id in flight", [][]byte{block, block}, "call request id 5 is already in flight", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, ts.sock)
			if tc.enteredCalls > 0 {
				r := &rawV2{nc: nc, d: wire.NewDecoder(nc, 0)}
				r.send(t, hello("[2]"), open)
				require.Equal(t, wire.TypeWelcome, r.next(t).Type)
				require.Equal(t, wire.TypeReply, r.next(t).Type)
			}
			for _, b := range tc.send {
				_, err := nc.Write(b)
				require.NoError(t, err)
			}
			expectFatal(t, nc, "protocol", tc.detail)
			for range tc.enteredCalls {
				waitEntered(t, ts)
				waitLeft(t, ts, context.Canceled) // the connection's end cancels it
			}
			out, err := gh.Call(ctx, "echo", []byte(tc.name))
			require.NoError(t, err)
			require.Equal(t, tc.name, string(out))
		})
	}
	require.Eventually(t, func() bool { return ts.Stats().Conns == 1 && ts.inflight() == 0 }, cancelWait, time.Millisecond)
	require.NoError(t, gh.Close())
}

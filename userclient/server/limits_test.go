package server

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// rawHello connects and completes the handshake by hand, returning the
// socket positioned after the welcome.
func rawHello(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", ts.sock)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	_, err = nc.Write(rawFrame(t, wire.TypeHello, 1, helloJSON, nil))
	require.NoError(t, err)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := wire.NewDecoder(nc, 0).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeWelcome, f.Type)
	nc.SetReadDeadline(time.Time{})
	return nc
}

// Connections over the per-user limit are refused at connect with a fatal
// limit error; closing one makes room again; refused ones are counted.
func TestConnectionsPerUIDLimit(t *testing.T) {
	const max = 5
	ts := newTestServer(t, Config{Limits: Limits{MaxConnsPerUID: max}})
	for range max {
		rawHello(t, ts)
	}
	for range 3 {
		nc, err := net.Dial("unix", ts.sock)
		require.NoError(t, err)
		expectFatal(t, nc, wire.CodeLimit, "already has 5 connections")
		nc.Close()
	}
	require.EqualValues(t, 3, ts.Stats().Refused)
	_, err := userclient.Dial(context.Background(), ts.sock)
	require.ErrorIs(t, err, userclient.ErrLimit, "the Go client reports the refusal as ErrLimit")
	require.EqualValues(t, 4, ts.Stats().Refused)
}

// The global limit holds for everyone; uid 0 has RootReserve more, so an
// administrator can still connect when others used up the rest.
func TestConnectionsGlobalLimit(t *testing.T) {
	const max = 4
	ts := newTestServer(t, Config{Limits: Limits{MaxConns: max}})
	allowed := max
	if os.Geteuid() == 0 {
		allowed += RootReserve
	}
	for range allowed {
		rawHello(t, ts)
	}
	nc, err := net.Dial("unix", ts.sock)
	require.NoError(t, err)
	expectFatal(t, nc, wire.CodeLimit, "the server has")
	nc.Close()
}

// Connections that never say hello are bounded separately, and one that
// completes its handshake makes room for another.
func TestIncompleteConnectionsLimit(t *testing.T) {
	const max = 3
	ts := newTestServer(t, Config{Limits: Limits{MaxIncomplete: max}})
	var silent []net.Conn
	for range max {
		nc, err := net.Dial("unix", ts.sock)
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		silent = append(silent, nc)
	}
	require.Eventually(t, func() bool { return ts.Stats().Conns == max }, 5*time.Second, time.Millisecond)
	nc, err := net.Dial("unix", ts.sock)
	require.NoError(t, err)
	expectFatal(t, nc, wire.CodeLimit, "have not completed their handshake")
	nc.Close()
	// One completes its handshake: room for one more.
	_, err = silent[0].Write(rawFrame(t, wire.TypeHello, 1, helloJSON, nil))
	require.NoError(t, err)
	_, err = wire.NewDecoder(silent[0], 0).ReadFrame()
	require.NoError(t, err)
	// The server counts the handshake done just after it sends the
	// welcome, so the room may appear a moment after the reply.
	var c *userclient.Client
	require.Eventually(t, func() bool {
		c, err = userclient.Dial(context.Background(), ts.sock)
		return err == nil
	}, 5*time.Second, time.Millisecond, "no room after a handshake completed: %v", err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Ping(context.Background()))
}

// A connection holds at most MaxHandles handles; closing one makes room,
// and the refusal leaves the connection usable.
func TestHandlesPerConnectionLimit(t *testing.T) {
	const max = 3
	ts := newTestServer(t, Config{Limits: Limits{MaxHandles: max}})
	ctx := context.Background()
	c := ts.dial(t)
	var hs []*userclient.Handle
	for range max {
		h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
		require.NoError(t, err)
		hs = append(hs, h)
	}
	_, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.ErrorIs(t, err, userclient.ErrLimit)
	require.ErrorContains(t, err, "3 handles")
	require.NoError(t, hs[0].Close())
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	out, err := h.Call(ctx, "echo", []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "x", string(out))
	// Another connection has its own budget.
	h2, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, h2.Close())
}

// Opens waiting for a service are bounded per connection and in all; a
// refused wait is an ErrLimit, and an ended wait gives its slot back.
func TestWaitingOpensLimits(t *testing.T) {
	ts := newTestServer(t, Config{Limits: Limits{MaxWaitingOpens: 2, MaxWaitingOpensTotal: 3}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c1, c2 := ts.dial(t), ts.dial(t)
	m := userclient.Match{Class: "NeverDevice"}
	w1, w2 := openWait(ctx, c1, m), openWait(ctx, c1, m)
	require.Eventually(t, func() bool { return ts.watchers() == 2 }, 5*time.Second, time.Millisecond)
	_, err := c1.OpenWait(ctx, m)
	require.ErrorIs(t, err, userclient.ErrLimit, "per connection")
	w3 := openWait(ctx, c2, m)
	require.Eventually(t, func() bool { return ts.watchers() == 3 }, 5*time.Second, time.Millisecond)
	_, err = c2.OpenWait(ctx, m)
	require.ErrorIs(t, err, userclient.ErrLimit, "in all")
	// The daemon still serves plain opens.
	h, err := c2.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, h.Close())
	cancel()
	for _, w := range []<-chan openResult{w1, w2, w3} {
		require.Error(t, (<-w).err)
	}
	require.Eventually(t, func() bool { return ts.Server.waiting.Load() == 0 }, 5*time.Second, time.Millisecond)
}

// A frame whose header arrived must be completed within FrameTimeout: the
// slow sender is dropped with the reason, the good client is not touched.
func TestFrameTimeout(t *testing.T) {
	ts := newTestServer(t, Config{Limits: Limits{FrameTimeout: 200 * time.Millisecond}})
	ctx := context.Background()
	good := ts.dial(t)
	nc := rawHello(t, ts)
	var hdr [24]byte
	binary.BigEndian.PutUint32(hdr[:], wire.DefaultMaxFrame) // announces 1 MiB, sends 20 bytes
	hdr[4] = byte(wire.TypePing)
	start := time.Now()
	_, err := nc.Write(hdr[:])
	require.NoError(t, err)
	expectFatal(t, nc, wire.CodeLimit, "frame timeout")
	require.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	err = good.Ping(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, ts.Stats().Timeouts)
}

// A connection that holds nothing is closed after IdleTimeout; one with a
// handle open, or a slow request in flight, is not.
func TestIdleTimeout(t *testing.T) {
	const idle = 200 * time.Millisecond
	ts := newTestServer(t, Config{Limits: Limits{IdleTimeout: idle}})
	ctx := context.Background()
	holder := ts.dial(t)
	h, err := holder.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	nc := rawHello(t, ts)
	expectFatal(t, nc, wire.CodeLimit, "idle")
	time.Sleep(3 * idle)
	out, err := h.Call(ctx, "echo", []byte("still open"))
	require.NoError(t, err, "a connection with a handle is not idle")
	require.Equal(t, "still open", string(out))
	require.NoError(t, h.Close())
}

// One user's handles over all its connections are bounded too: opening a
// shared service many times on many connections is what makes every close
// fan out to all of them.
func TestHandlesPerUIDLimit(t *testing.T) {
	ts := newTestServer(t, Config{Limits: Limits{MaxHandlesPerUID: 3}})
	ctx := context.Background()
	c1, c2 := ts.dial(t), ts.dial(t)
	h1, err := c1.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	_, err = c1.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	_, err = c2.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	_, err = c2.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.ErrorIs(t, err, userclient.ErrLimit)
	require.ErrorContains(t, err, "has 3 handles open or opening over its connections")
	_, err = c2.Open(ctx, userclient.Match{Class: "NoSuchDevice"})
	require.ErrorIs(t, err, userclient.ErrLimit, "checked before the lookup")
	require.NoError(t, h1.Close())
	h, err := c2.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err, "a closed handle gives its share back")
	require.NoError(t, h.Close())
	require.NoError(t, c1.Close(), "ending a connection gives its handles back")
	require.Eventually(t, func() bool {
		h, err := c2.Open(ctx, userclient.Match{Class: "TestDevice"})
		if err == nil {
			h.Close()
		}
		return err == nil
	}, 5*time.Second, time.Millisecond)
}

// Calls in flight are bounded per user (MaxInflightPerUID) and over all
// users (MaxInflightTotal, below the runtime's thread limit however many
// users take their share): past a bound the connections wait (are not
// read), and the calls proceed as others finish. An administrative
// request is not a call: it is still answered.
func TestInflightLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		lim  Limits
	}{
		{"per uid", Limits{MaxInflightPerUID: 2}},
		{"total", Limits{MaxInflightPerUID: 100, MaxInflightTotal: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, Config{Limits: tc.lim})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var hs []*userclient.Handle
			for range 3 {
				h, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
				require.NoError(t, err)
				hs = append(hs, h)
			}
			errs := make(chan error, 3)
			for _, h := range hs {
				go func() { _, err := h.Call(ctx, "block", nil); errs <- err }()
			}
			for range 2 {
				select {
				case <-ts.reg.entered:
				case <-time.After(10 * time.Second):
					t.Fatal("the first two calls did not reach the driver")
				}
			}
			select {
			case <-ts.reg.entered:
				t.Fatal("a third call reached the driver past the bound")
			case <-time.After(100 * time.Millisecond):
			}
			require.NoError(t, ts.dial(t).Ping(ctx))
			cancel() // the two blocked calls end; the third gets its turn and ends too
			for range 3 {
				require.Error(t, <-errs)
			}
		})
	}
}

package userclient

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient/wire"
)

// These tests run the client against hand-written servers: what the
// client does on the wire, whatever server it talks to. The daemon's own
// server is tested with this client in package userclient/server.

// A server that dies with requests unread (a SIGKILLed daemon) resets the
// connection: the application gets ErrClosed, not a bare ECONNRESET. Found
// by the reliability branch's daemon-crash test (TestDaemonCrash: a read
// in flight when drvctl was SIGKILLed failed with "connection reset by
// peer", matching no sentinel).
func TestServerResetIsErrClosed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	gotPing := make(chan net.Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		dec := wire.NewDecoder(nc, wire.DefaultMaxFrame)
		f, err := dec.ReadFrame()
		if err != nil || f.Type != wire.TypeHello {
			nc.Close()
			return
		}
		ctl, _ := json.Marshal(wire.WelcomeMsg{Protocol: wire.ProtocolName, Version: wire.Version, MaxFrame: wire.DefaultMaxFrame})
		b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}, wire.DefaultMaxFrame)
		_, _ = nc.Write(b)
		gotPing <- nc
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	require.NoError(t, err)
	defer c.Close()
	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(ctx) }()
	nc := <-gotPing
	time.Sleep(50 * time.Millisecond) // the ping sits unread in the server's socket
	nc.Close()                        // closing with unread data resets the peer
	err = <-pinged
	require.ErrorIs(t, err, ErrClosed, "got %v", err)
	<-c.Done()
	require.ErrorIs(t, c.Err(), ErrClosed)
}

// A version 1 server has no cancel frame (it would drop the connection
// for an unknown type): the client never sends one, returns ctx.Err() at
// once and drops the late reply.
func TestCancelOldServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	frames := make(chan wire.Frame, 16)
	srvErr := make(chan error, 1)
	var nc net.Conn
	accepted := make(chan struct{})
	go func() {
		var err error
		nc, err = l.Accept()
		close(accepted)
		if err != nil {
			srvErr <- err
			return
		}
		dec := wire.NewDecoder(nc, wire.DefaultMaxFrame)
		for {
			f, err := dec.ReadFrame()
			if err != nil {
				srvErr <- err
				close(frames)
				return
			}
			f.Control, f.Data = clone(f.Control), clone(f.Data)
			if f.Type == wire.TypeHello {
				frames <- f
				ctl, _ := json.Marshal(wire.WelcomeMsg{Protocol: wire.ProtocolName, Version: 1, MaxFrame: wire.DefaultMaxFrame})
				b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}, wire.DefaultMaxFrame)
				_, _ = nc.Write(b)
				continue
			}
			frames <- f
		}
	}()
	c, err := Dial(context.Background(), sock)
	require.NoError(t, err)
	defer c.Close()
	<-accepted
	defer nc.Close()
	hello := <-frames
	var hm wire.HelloMsg
	require.NoError(t, json.Unmarshal(hello.Control, &hm))
	require.Equal(t, []int{4, 3, 2, 1}, hm.Versions, "the client offers every version")
	require.Equal(t, 1, c.Version())
	require.Nil(t, c.slots, "a version 1 server announces no limit")

	h := &Handle{c: c, id: 1, terminated: make(chan struct{})}
	cctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := h.Call(cctx, "block", nil)
		errc <- err
	}()
	call := <-frames
	require.Equal(t, wire.TypeCall, call.Type)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	// What follows the call on the wire is the ping, not a cancel.
	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(context.Background()) }()
	ping := <-frames
	require.Equal(t, wire.TypePing, ping.Type)
	// The late reply to the call comes first and is dropped.
	for _, f := range []wire.Frame{{Type: wire.TypeReply, ID: call.ID, Data: []byte("late")}, {Type: wire.TypeReply, ID: ping.ID}} {
		b, err := wire.AppendFrame(nil, &f, wire.DefaultMaxFrame)
		require.NoError(t, err)
		_, err = nc.Write(b)
		require.NoError(t, err)
	}
	require.NoError(t, <-pinged)
	require.NoError(t, c.Close())
	require.Error(t, <-srvErr)
	for f := range frames {
		require.NotEqual(t, wire.TypeCancel, f.Type)
	}
}

// fakeServer accepts one connection, welcomes it with version and
// max_inflight and hands it over; it reads nothing more itself.
func fakeServer(t *testing.T, version, maxInflight int) (sock string, conns <-chan net.Conn) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	ch := make(chan net.Conn, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		f, err := wire.NewDecoder(nc, wire.DefaultMaxFrame).ReadFrame()
		if err != nil || f.Type != wire.TypeHello {
			nc.Close()
			close(ch)
			return
		}
		ctl, _ := json.Marshal(wire.WelcomeMsg{Protocol: wire.ProtocolName, Version: version, MaxFrame: wire.DefaultMaxFrame, MaxInflight: maxInflight})
		b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeWelcome, ID: f.ID, Control: ctl}, wire.DefaultMaxFrame)
		_, _ = nc.Write(b)
		ch <- nc
	}()
	return sock, ch
}

// A server that stops reading cannot hold up a caller whose context ends:
// the cancel frame is written in the background, and given up with the
// connection.
func TestCancelStalledSocket(t *testing.T) {
	leaktest.Check(t)
	sock, conns := fakeServer(t, 2, 8)
	c, err := Dial(context.Background(), sock)
	require.NoError(t, err)
	nc := <-conns
	require.NotNil(t, nc)
	defer nc.Close()
	h := &Handle{c: c, id: 1, terminated: make(chan struct{})}

	cctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := h.Call(cctx, "block", nil)
		errc <- err
	}()
	f, err := wire.NewDecoder(nc, wire.DefaultMaxFrame).ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeCall, f.Type)
	// From now on the server reads nothing: a call far larger than the
	// socket buffer blocks in its write, holding the socket.
	big := make(chan error, 1)
	go func() {
		_, err := h.Call(context.Background(), "write", make([]byte, wire.DefaultMaxFrame-1024))
		big <- err
	}()
	require.Eventually(t, func() bool {
		if c.wmu.TryLock() {
			c.wmu.Unlock()
			return false
		}
		return true
	}, cancelWait, time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(cancelWait):
		t.Fatal("a cancelled call waited on a stalled socket")
	}
	require.NoError(t, c.Close())
	require.ErrorIs(t, <-big, ErrClosed)
}

// A server that shares no version with the client refuses the hello with
// a version error: Dial fails with ErrProtocol and the server's words.
// (The daemon's side of it: TestHostileInputs in userclient/server.)
func TestVersionMismatch(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	hello := make(chan wire.HelloMsg, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		f, err := wire.NewDecoder(nc, 0).ReadFrame()
		if err != nil {
			return
		}
		var h wire.HelloMsg
		_ = json.Unmarshal(f.Control, &h)
		hello <- h
		ctl, _ := json.Marshal(wire.ErrorMsg{Code: wire.CodeVersion, Message: "client speaks versions [7], server speaks 1 to 2"})
		b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeError, Flags: wire.FlagFatal, Control: ctl}, wire.DefaultMaxFrame)
		_, _ = nc.Write(b)
	}()
	_, err = Dial(context.Background(), sock, withVersions(7))
	require.ErrorIs(t, err, ErrProtocol)
	require.EqualError(t, err, "dial "+sock+": client speaks versions [7], server speaks 1 to 2")
	require.Equal(t, []int{7}, (<-hello).Versions)
}

// Dial to a path nothing listens on: ErrNoService, said once.
func TestDialNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, err := Dial(context.Background(), sock)
	require.ErrorIs(t, err, ErrNoService)
	require.ErrorIs(t, err, syscall.ENOENT)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "dial", oe.Op)
	require.EqualError(t, err, "dial "+sock+": no daemon listening: connect: no such file or directory")
}

package server

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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
		dec := NewDecoder(nc, DefaultMaxFrame)
		f, err := dec.ReadFrame()
		if err != nil || f.Type != TypeHello {
			nc.Close()
			return
		}
		ctl, _ := json.Marshal(welcomeMsg{Protocol: ProtocolName, Version: Version, MaxFrame: DefaultMaxFrame})
		b, _ := AppendFrame(nil, &Frame{Type: TypeWelcome, ID: f.ID, Control: ctl}, DefaultMaxFrame)
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

// After the connection ended, a handle's calls say the connection is gone
// (ErrClosed), not only that the service is (ErrTerminated).
func TestCallAfterDisconnect(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	c := ts.dial(t)
	h, err := c.Open(ctx, Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, ts.Close())
	<-c.Done()
	_, err = h.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, err, ErrTerminated)
}

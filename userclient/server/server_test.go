package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

func TestOpenCallClose(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	c := ts.dial(t)
	require.Equal(t, int32(os.Getpid()), c.Cred().PID)
	require.Equal(t, uint32(os.Geteuid()), c.Cred().UID)

	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.Equal(t, ts.dev.ID(), h.Service().ID)
	require.Equal(t, "TestDriver", h.Service().Personality)
	require.NotZero(t, h.ClientID())
	require.Equal(t, 1, ts.Stats().Sessions)

	out, err := h.Call(ctx, "echo", []byte("bulk \x00\xff bytes"))
	require.NoError(t, err)
	require.Equal(t, []byte("bulk \x00\xff bytes"), out)

	_, err = h.Call(ctx, "fail", nil)
	require.ErrorContains(t, err, "the device said no")
	// A vanished device stays recognisable across the socket (it used to
	// arrive as a generic failure).
	_, err = h.Call(ctx, "vanish", nil)
	require.ErrorIs(t, err, userclient.ErrNoDevice)
	require.NotErrorIs(t, err, userclient.ErrTerminated)
	require.EqualError(t, err, fmt.Sprintf("call TestDevice#%d vanish: no such device: usb: bulk transfer: no device", ts.dev.ID()),
		"said once, with the operation and the service first")
	_, err = h.Call(ctx, "nope", nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod)

	// A cancelled call returns at once; the connection stays usable.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	_, err = h.Call(cctx, "block", nil)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, c.Ping(ctx))

	require.NoError(t, h.Close())
	require.NoError(t, h.Close())
	_, err = h.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, userclient.ErrClosed)
	ts.reg.waitFreed(t, h.ClientID())
	ts.reg.checkTrace(t, h.ClientID())
	require.Equal(t, 0, ts.Stats().Sessions)
	_, ok := <-h.Notifications()
	require.False(t, ok, "notifications channel is closed with the handle")
}

func TestOpenRefusalsKeepConnection(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	c := ts.dial(t)
	for _, m := range []userclient.Match{{Class: "Nope"}, {}, {ID: 123456}, {Class: "TestDevice", Properties: map[string]string{"x": "y"}}} {
		_, err := c.Open(ctx, m)
		require.ErrorIs(t, err, userclient.ErrNoService, "%+v", m)
	}
	_, _, err := c.Admin(ctx, userclient.AdminLeaks, nil, nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod) // root may, but no handler
	require.NoError(t, c.Ping(ctx))
}

func TestPolicy(t *testing.T) {
	p := Policy{
		Rules: []Rule{
			{GIDs: []uint32{100}, Classes: []string{"SCSIDevice"}},
			{UIDs: []uint32{1000}, Personalities: []string{"MassStorage"}},
			{AnyUser: true, Classes: []string{"Public"}},
		},
		AdminGIDs: []uint32{50},
	}
	scsi := userclient.ServiceInfo{ID: 1, Class: "SCSIDevice"}
	ms := userclient.ServiceInfo{ID: 2, Class: "USBInterface", Personality: "MassStorage"}
	pub := userclient.ServiceInfo{ID: 3, Class: "Public"}
	for _, tc := range []struct {
		cred userclient.Cred
		svc  userclient.ServiceInfo
		ok   bool
	}{
		{userclient.Cred{UID: 0}, scsi, true},
		{userclient.Cred{UID: 5, GID: 100}, scsi, true},
		{userclient.Cred{UID: 5, GID: 7, Groups: []uint32{3, 100}}, scsi, true},
		{userclient.Cred{UID: 5, GID: 7}, scsi, false},
		{userclient.Cred{UID: 1000, GID: 7}, ms, true},
		{userclient.Cred{UID: 1000, GID: 7}, scsi, false},
		{userclient.Cred{UID: 5, GID: 100}, ms, false},
		{userclient.Cred{UID: 65534, GID: 65534}, pub, true},
	} {
		err := p.AllowOpen(tc.cred, tc.svc)
		if tc.ok {
			require.NoError(t, err, "%+v %+v", tc.cred, tc.svc)
		} else {
			require.ErrorIs(t, err, userclient.ErrPermission, "%+v %+v", tc.cred, tc.svc)
		}
	}
	require.NoError(t, p.AllowAdmin(userclient.Cred{UID: 0}, userclient.AdminUnload))
	require.NoError(t, p.AllowAdmin(userclient.Cred{UID: 9, GID: 1, Groups: []uint32{50}}, userclient.AdminUnload))
	require.ErrorIs(t, p.AllowAdmin(userclient.Cred{UID: 9, GID: 100}, userclient.AdminUnload), userclient.ErrPermission)
	require.ErrorIs(t, (&Policy{}).AllowOpen(userclient.Cred{UID: 1}, pub), userclient.ErrPermission)
}

func TestAdminDispatch(t *testing.T) {
	ts := newTestServer(t, Config{Admin: func(_ context.Context, cred userclient.Cred, op string, args json.RawMessage, data []byte) (any, []byte, error) {
		if op != userclient.AdminTerminate {
			return nil, nil, fmt.Errorf("%w: %s", userclient.ErrNoMethod, op)
		}
		var a struct{ ID uint64 }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, nil, err
		}
		return map[string]any{"terminated": a.ID, "by": cred.PID}, data, nil
	}})
	c := ts.dial(t)
	res, out, err := c.Admin(context.Background(), userclient.AdminTerminate, map[string]uint64{"id": 7}, []byte("x"))
	require.NoError(t, err)
	require.JSONEq(t, fmt.Sprintf(`{"terminated":7,"by":%d}`, os.Getpid()), string(res))
	require.Equal(t, []byte("x"), out)
	_, _, err = c.Admin(context.Background(), "frobnicate", nil, nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod)
}

func TestListenSocketFile(t *testing.T) {
	dir, err := os.MkdirTemp("", "uc")
	require.NoError(t, err)
	defer os.RemoveAll(dir)
	reg := NewRegistryBackend(driver.NewRegistry())
	defer reg.r.Close(context.Background())
	path := filepath.Join(dir, "s")

	t.Run("mode and group", func(t *testing.T) {
		s, err := Listen(reg, Config{Path: path, GID: 65534})
		require.NoError(t, err)
		fi, err := os.Stat(path)
		require.NoError(t, err)
		require.Equal(t, os.ModeSocket|0o660, fi.Mode())
		require.Equal(t, uint32(65534), fi.Sys().(*syscallStat).Gid)

		// A live server is never displaced.
		_, err = Listen(reg, Config{Path: path})
		require.ErrorIs(t, err, ErrAddrInUse)
		require.NoError(t, s.Close())
		_, err = os.Stat(path)
		require.ErrorIs(t, err, os.ErrNotExist, "Close removes the socket")
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		require.NoError(t, err)
		ln.SetUnlinkOnClose(false)
		ln.Close() // the file stays; nothing answers: a crashed daemon
		s, err := Listen(reg, Config{Path: path, Mode: 0o600, GID: -1})
		require.NoError(t, err)
		c, err := userclient.Dial(context.Background(), path)
		require.NoError(t, err)
		c.Close()
		require.NoError(t, s.Close())
	})
	t.Run("not a socket is never removed", func(t *testing.T) {
		require.NoError(t, os.WriteFile(path, []byte("precious"), 0o644))
		_, err := Listen(reg, Config{Path: path, GID: -1})
		require.ErrorIs(t, err, ErrNotSocket)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.Equal(t, "precious", string(b))
		os.Remove(path)
	})
	t.Run("dial nothing", func(t *testing.T) {
		_, err := userclient.Dial(context.Background(), path)
		require.ErrorIs(t, err, userclient.ErrNoService)
	})
}

// rawConn is a hand-driven connection for hostile inputs.
func rawDial(t testing.TB, sock string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	return nc
}

func mustFrame(t testing.TB, f wire.Frame) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, &f, wire.DefaultMaxFrame)
	require.NoError(t, err)
	return b
}

// openRaw connects a peer that says hello and opens the test device, and
// reads nothing until told.
func openRaw(t testing.TB, ts *testServer) net.Conn {
	nc := rawDial(t, ts.sock)
	_, err := nc.Write(append(rawFrame(t, wire.TypeHello, 1, helloJSON, nil), rawFrame(t, wire.TypeOpen, 2, `{"match":{"class":"TestDevice"}}`, nil)...))
	require.NoError(t, err)
	return nc
}

func rawFrame(t testing.TB, typ wire.MsgType, id uint64, ctl string, data []byte) []byte {
	return mustFrame(t, wire.Frame{Type: typ, ID: id, Control: []byte(ctl), Data: data})
}

const helloJSON = `{"protocol":"drvkit-userclient","versions":[1]}`

// expectFatal reads until the fatal error frame and then EOF.
func expectFatal(t testing.TB, nc net.Conn, code, detail string) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	d := wire.NewDecoder(nc, 0)
	for {
		f, err := d.ReadFrame()
		require.NoError(t, err, "want a %s error frame", code)
		if f.Type != wire.TypeError {
			continue
		}
		require.Equal(t, wire.FlagFatal, f.Flags)
		err = wire.DecodeError(f.Control)
		var re *wire.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, code, re.Code, "%v", err)
		require.ErrorContains(t, err, detail)
		break
	}
	// Closed after the error frame: EOF, or a reset if the server had
	// unread bytes from us (Linux resets then).
	_, err := d.ReadFrame()
	require.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "%v", err)
}

func TestHostileInputs(t *testing.T) {
	ts := newTestServer(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	good := ts.dial(t)
	gh, err := good.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	notes := gh.Notifications()

	hello := rawFrame(t, wire.TypeHello, 1, helloJSON, nil)
	giant := binary.BigEndian.AppendUint32(nil, 1<<31)
	random := make([]byte, 4096)
	rand.NewChaCha8([32]byte{1}).Read(random)
	random[0] = 0x40 // a length far beyond the maximum, whatever the rest

	for _, tc := range []struct {
		name         string
		send         [][]byte
		closeWrite   bool
		code, detail string
	}{
		{"random bytes", [][]byte{random}, false, "protocol", "exceeds the maximum"},
		{"giant length prefix", [][]byte{giant}, false, "protocol", "exceeds the maximum"},
		{"giant length after hello", [][]byte{hello, giant}, false, "protocol", "exceeds the maximum"},
		{"truncated frame", [][]byte{hello[:10]}, true, "protocol", "truncated frame"},
		{"truncated after hello", [][]byte{hello, rawFrame(t, wire.TypePing, 2, "", nil)[:7]}, true, "protocol", "truncated"},
		{"unknown type", [][]byte{hello, {0, 0, 0, 16, 77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}}, false, "protocol", "unknown frame type 77"},
		{"call before hello", [][]byte{rawFrame(t, wire.TypeCall, 1, `{}`, nil)}, false, "protocol", "want hello"},
		{"bad version", [][]byte{rawFrame(t, wire.TypeHello, 1, `{"protocol":"drvkit-userclient","versions":[5,6]}`, nil)}, false, "version", "server speaks 1 to 4"},
		{"wrong protocol", [][]byte{rawFrame(t, wire.TypeHello, 1, `{"protocol":"http","versions":[1]}`, nil)}, false, "protocol", `"http"`},
		{"bad json", [][]byte{hello, rawFrame(t, wire.TypeOpen, 2, `{"match":`, nil)}, false, "protocol", "bad open payload"},
		{"client sends reply", [][]byte{hello, rawFrame(t, wire.TypeReply, 2, ``, nil)}, false, "protocol", "may not send reply"},
		{"silent", nil, false, "protocol", "handshake timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawDial(t, ts.sock)
			for _, b := range tc.send {
				_, err := nc.Write(b)
				require.NoError(t, err)
			}
			if tc.closeWrite {
				nc.(*net.UnixConn).CloseWrite()
			}
			expectFatal(t, nc, tc.code, tc.detail)
			// The daemon and the other client carry on.
			out, err := gh.Call(ctx, "echo", []byte(tc.name))
			require.NoError(t, err)
			require.Equal(t, tc.name, string(out))
		})
	}
	ts.dev.message([]byte("still here"))
	n := <-notes
	require.Equal(t, driverMsgType, n.Type)
	require.Equal(t, "still here", string(n.Data))
	require.NoError(t, gh.Close())
}

func TestIdleConnections(t *testing.T) {
	// Within the limits: this is about what idle connections cost the
	// others (limits_test.go tests the limits).
	ts := newTestServer(t, Config{Limits: Limits{MaxConnsPerUID: 2000, MaxConns: 2000, MaxIncomplete: 2000}})
	ctx := context.Background()
	const n = 1000
	conns := make([]net.Conn, 0, n)
	hello := rawFrame(t, wire.TypeHello, 1, helloJSON, nil)
	for i := range n {
		nc, err := net.Dial("unix", ts.sock)
		require.NoError(t, err)
		if i%2 == 0 {
			_, err = nc.Write(hello) // half say hello, then nothing
			require.NoError(t, err)
		}
		conns = append(conns, nc)
	}
	require.Eventually(t, func() bool { return ts.Stats().Conns >= n }, 10*time.Second, time.Millisecond)
	c := ts.dial(t)
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	out, err := h.Call(ctx, "echo", []byte("busy daemon"))
	require.NoError(t, err)
	require.Equal(t, "busy daemon", string(out))
	require.NoError(t, h.Close())
	for _, nc := range conns {
		nc.Close()
	}
	require.Eventually(t, func() bool { return ts.Stats().Conns == 1 }, 10*time.Second, time.Millisecond)
}

func TestNeverReadingClientIsDisconnected(t *testing.T) {
	ts := newTestServer(t, Config{QueueFrames: 64, QueueBytes: 256 << 10})
	ctx := context.Background()
	good := ts.dial(t)
	gh, err := good.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	got := make(chan userclient.Notification)
	go func() { // the good client reads everything
		for n := range gh.Notifications() {
			got <- n
		}
		close(got)
	}()

	// The bad client opens and then never reads again.
	openRaw(t, ts) // closed at cleanup
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 2 }, 10*time.Second, time.Millisecond)

	payload := bytes.Repeat([]byte("n"), 8<<10)
	var types []userclient.NotificationType
	next := func() userclient.Notification { // the next driver message the good client got
		for {
			select {
			case n := <-got:
				types = append(types, n.Type)
				if n.Type == driverMsgType {
					return n
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the reading client is starved")
			}
		}
	}
	for ts.Stats().Sessions == 2 {
		ts.dev.message(payload) // never blocks, whoever reads
		require.Len(t, next().Data, len(payload))
	}
	d := <-ts.disc
	require.ErrorIs(t, d.reason, userclient.ErrOverflow)
	ts.dev.message([]byte("last"))
	require.Equal(t, "last", string(next().Data))
	// The good client also hears that the dropped one closed the device.
	require.Contains(t, types, userclient.ServiceWasClosed)
	require.Equal(t, 1, ts.Stats().Sessions)
	require.NoError(t, gh.Close())
}

func TestUnplugWhileClientsMidCall(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	type res struct {
		err  error
		note userclient.Notification
	}
	const n = 3
	handles := make([]*userclient.Handle, n)
	results := make(chan res, n)
	for i := range n {
		h, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
		require.NoError(t, err)
		handles[i] = h
		notes := h.Notifications()
		go func() {
			_, err := h.Call(ctx, "block", nil)
			var first userclient.Notification
			for nn := range notes {
				if first.Type == "" {
					first = nn
				}
				if nn.Type == userclient.ServiceIsRequestingClose {
					h.Close() // what a well-behaved application does
				}
			}
			results <- res{err, first}
		}()
	}
	for range n {
		<-ts.reg.entered
	}
	<-ts.dev.terminate()
	for range n {
		r := <-results
		require.ErrorIs(t, r.err, userclient.ErrTerminated)
		require.Equal(t, userclient.ServiceIsTerminated, r.note.Type)
		require.Equal(t, ts.dev.ID(), r.note.Service)
	}
	for _, h := range handles {
		ts.reg.waitFreed(t, h.ClientID())
		ts.reg.checkTrace(t, h.ClientID())
		_, err := h.Call(ctx, "echo", nil)
		require.Error(t, err)
	}
	_, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
	require.ErrorIs(t, err, userclient.ErrNoService, "a terminated service cannot be opened")
}

func TestEmbeddedCancelIsDeath(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	c, err := ts.Embed(ctx)
	require.NoError(t, err)
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	out, err := h.Call(ctx, "echo", []byte("in-process"))
	require.NoError(t, err)
	require.Equal(t, "in-process", string(out))

	cancel() // the embedded client died
	ts.reg.waitFreed(t, h.ClientID())
	ts.reg.checkTrace(t, h.ClientID())
	<-c.Done()
	require.ErrorIs(t, c.Err(), userclient.ErrClosed)
	d := ts.waitDisconnect(t, os.Getpid())
	require.ErrorIs(t, d.reason, ErrClientDied)
	_, err = h.Call(context.Background(), "echo", nil)
	require.Error(t, err)
}

func TestServerCloseEndsSessions(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.dial(t)
	h, err := c.Open(context.Background(), userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, ts.Server.Close())
	ts.reg.waitFreed(t, h.ClientID())
	<-c.Done()
	require.ErrorIs(t, c.Err(), userclient.ErrClosed)
	require.ErrorContains(t, c.Err(), "server shutting down")
}

// An Open the caller gave up on is closed when its reply arrives: no
// session is left behind on the server.
func TestAbandonedOpenIsClosed(t *testing.T) {
	ts := newTestServer(t, Config{})
	c := ts.dial(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 20 {
		h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
		if err == nil {
			require.NoError(t, h.Close()) // the reply won the race
			continue
		}
		require.ErrorIs(t, err, context.Canceled)
	}
	require.NoError(t, c.Ping(context.Background()))
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 0 && ts.reg.liveClients() == 0 },
		10*time.Second, time.Millisecond, "sessions left: %+v", ts.Stats())
}

// slowStartDriver's Start waits for release: the window in which a driver
// is attached and active but not ready.
type slowStartDriver struct {
	testDriver
	started chan struct{}
	release chan struct{}
}

func (d *slowStartDriver) Start(ctx context.Context, _ *driver.Service) error {
	close(d.started)
	select {
	case <-d.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// plugSlowStart publishes a SlowNub whose SlowDriver instance is inside
// Start when it returns; closing d.release lets Start return, and
// published then yields Publish's result.
func plugSlowStart(t *testing.T, ts *testServer) (d *slowStartDriver, nub *driver.Service, published <-chan error) {
	t.Helper()
	d = &slowStartDriver{testDriver: newTestDriver(ts.reg), started: make(chan struct{}), release: make(chan struct{})}
	require.NoError(t, ts.reg.r.RegisterPersonality(driver.Personality{
		Name: "SlowDriver", Class: "SlowDevice", ProviderClass: "SlowNub",
		New: func() driver.Driver { return d },
	}))
	nub = ts.reg.r.NewNub("SlowNub", "slow0", driver.Properties{})
	pub := make(chan error, 1)
	go func() { pub <- ts.reg.r.Publish(nil, nub) }()
	<-d.started
	return d, nub, pub
}

// A driver whose Start is still running is not offered to applications:
// the daemon crash test opened usbstorage before it had claimed its
// interface.
func TestStartingDriverIsNotOpenable(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	d, nub, published := plugSlowStart(t, ts)
	cs := nub.Clients()
	require.Len(t, cs, 1)
	slow := cs[0]
	require.True(t, slow.State().Active)
	require.False(t, slow.State().Started)

	c := ts.dial(t)
	for _, m := range []userclient.Match{{Class: "SlowDevice"}, {ID: slow.ID()}} {
		_, err := c.Open(ctx, m)
		require.ErrorIs(t, err, userclient.ErrNoService, "%+v", m)
	}
	_, err := NewRegistryBackend(ts.reg.r).Open(ctx, slow.ID(), OpenRequest{})
	require.ErrorIs(t, err, userclient.ErrNoService)
	require.ErrorContains(t, err, "has not started yet")

	close(d.release)
	require.NoError(t, <-published)
	require.True(t, slow.State().Started)
	h, err := c.Open(ctx, userclient.Match{Class: "SlowDevice"})
	require.NoError(t, err)
	out, err := h.Call(ctx, "echo", []byte("ready"))
	require.NoError(t, err)
	require.Equal(t, []byte("ready"), out)
	require.NoError(t, h.Close())
	ts.reg.waitFreed(t, h.ClientID())
	require.NoError(t, nub.TerminateSync(ctx))
	ts.reg.rec.CheckPartial(t)
}

// A driver's vanished device matches both driver.ErrNoDevice (for code in
// the daemon) and userclient.ErrNoDevice (the wire code's sentinel), with
// the driver's text unchanged.
func TestRegistrySessionNoDevice(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	sess, err := NewRegistryBackend(ts.reg.r).Open(ctx, ts.dev.ID(), OpenRequest{Notify: func(userclient.Notification) {}})
	require.NoError(t, err)
	_, err = sess.Call(ctx, "vanish", nil)
	require.ErrorIs(t, err, driver.ErrNoDevice)
	require.ErrorIs(t, err, userclient.ErrNoDevice)
	require.Equal(t, wire.CodeNoDevice, wire.CodeOf(err))
	require.EqualError(t, err, "no such device: usb: bulk transfer: no device")
	require.NoError(t, sess.Close())
	ts.reg.waitFreed(t, sess.ClientID())
}

// What an application reads: the operation and what it was on, once, then
// what happened — no package prefixes, no wire codes, no struct dumps.
func TestErrorText(t *testing.T) {
	ts := newTestServer(t, Config{Policy: Policy{Rules: []Rule{{AnyUser: true, Classes: []string{"PublicDevice"}}}}})
	ctx := context.Background()
	c := ts.dial(t)
	_, err := c.Open(ctx, userclient.Match{Personality: "nosuch"})
	require.ErrorIs(t, err, userclient.ErrNoService)
	require.EqualError(t, err, "open personality=nosuch: no such service")
	_, err = c.Open(ctx, userclient.Match{})
	require.EqualError(t, err, "open (empty match): no such service: empty match")

	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	svc := fmt.Sprintf("TestDevice#%d", ts.dev.ID())
	_, err = h.Call(ctx, "nope", nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod)
	require.ErrorContains(t, err, "call "+svc+" nope: no such method: ")
	_, err = h.Call(ctx, "fail", nil)
	require.EqualError(t, err, "call "+svc+" fail: the device said no")

	terminated := ts.dev.terminate()
	<-h.Terminated()
	_, err = h.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, userclient.ErrTerminated)
	require.EqualError(t, err, "call "+svc+" echo: service terminated")
	require.NoError(t, h.Close())
	_, err = h.Call(ctx, "echo", nil)
	require.EqualError(t, err, "call "+svc+" echo: closed")
	<-terminated

	_, _, err = c.Admin(ctx, "frobnicate", nil, nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod)
	require.EqualError(t, err, `admin frobnicate: no such method: administrative call "frobnicate": this server has no admin handler`)
}

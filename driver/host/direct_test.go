package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// socketsOf counts the sockets process pid holds.
func socketsOf(t testing.TB, pid int) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	n := 0
	for _, ent := range ents {
		if target, _ := os.Readlink(dir + "/" + ent.Name()); strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// counterBundle loads the counter bundle and plugs one device for it: the
// started instance's process id.
func counterBundle(t *testing.T) (e *env, nub *driver.Service, pid int) {
	e = newEnv(t)
	m := e.loadBundle("counter", "")
	nub = e.plug("1-1:1.0")
	e.instance(nub)
	return e, nub, e.pid(m.Name)
}

// unplugAndFinish ends the run: the device goes, the registry settles,
// and nothing may be left.
func (e *env) unplugAndFinish(nub *driver.Service) {
	nub.TerminateWith(driver.CauseUnplug)
	require.NoError(e.t, e.r.WaitQuiet(e.ctx))
	e.finish()
}

// TestDirectCalls: a handle on a Go SDK bundle gets a direct call channel
// to the driver's process: its calls are answered there (with the
// manifest's methods and limits, cancellation, errors as through the
// daemon), its notifications still come through the daemon, and closing
// it closes the channel in the driver's process.
func TestDirectCalls(t *testing.T) {
	e, nub, pid := counterBundle(t)
	before := socketsOf(t, pid)

	c := e.dial()
	defer c.Close()
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.True(t, h.Direct(), "the Go SDK serves direct calls")
	require.Equal(t, before+1, socketsOf(t, pid), "the driver's process holds the channel")

	out, err := h.Call(e.ctx, "count", nil)
	require.NoError(t, err)
	var r counter.Reply
	require.NoError(t, json.Unmarshal(out, &r))
	require.Equal(t, pid, r.PID)

	// The manifest's limits and methods hold on the direct path too.
	_, err = h.Call(e.ctx, "echo", make([]byte, 5000))
	require.ErrorContains(t, err, "bytes of input, max_input is")
	_, err = h.Call(e.ctx, "nosuch", nil)
	require.ErrorIs(t, err, userclient.ErrNoMethod)

	// Cancellation reaches the method in the driver's process.
	ctx, cancel := context.WithTimeout(e.ctx, 50*time.Millisecond)
	begin := time.Now()
	_, err = h.Call(ctx, "wait", nil)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(begin), 5*time.Second)
	out, err = h.Call(e.ctx, "echo", []byte("still there"))
	require.NoError(t, err)
	require.Equal(t, "still there", string(out))

	// Notifications come through the daemon, as before.
	_, err = h.Call(e.ctx, "notify", []byte("ping"))
	require.NoError(t, err)
	n := nextNotification(t, h, userclient.NotificationType(counter.MsgCount.String()))
	require.Equal(t, "ping", string(n.Data))

	// A call in flight when the device goes: the application hears what
	// it hears through the daemon.
	errc := make(chan error, 1)
	go func() { _, err := h.Call(e.ctx, "wait", nil); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	nub.TerminateWith(driver.CauseUnplug)
	select {
	case err := <-errc:
		// As through the daemon: the no_device code, its text saying
		// the termination.
		require.ErrorIs(t, err, userclient.ErrNoDevice, "%v", err)
		require.ErrorContains(t, err, "terminated")
	case <-e.ctx.Done():
		t.Fatal("the call in flight was not ended by the unplug")
	}
	nextNotification(t, h, "ServiceIsTerminated")
	_, err = h.Call(e.ctx, "count", nil)
	require.ErrorIs(t, err, userclient.ErrTerminated)

	require.NoError(t, h.Close())
	require.False(t, h.Direct())
	require.NoError(t, c.Close())
	e.finish()
}

// TestDirectChannelClosedWithHandle: closing the handle (and the
// application's death) closes the channel in the driver's process, which
// keeps serving its other applications.
func TestDirectChannelClosedWithHandle(t *testing.T) {
	e, nub, pid := counterBundle(t)
	before := socketsOf(t, pid)

	c := e.dial()
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.True(t, h.Direct())
	h2, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.Equal(t, before+2, socketsOf(t, pid))
	require.NoError(t, h.Close())
	require.Eventually(t, func() bool { return socketsOf(t, pid) == before+1 }, 5*time.Second, 5*time.Millisecond,
		"the closed handle's channel is closed in the driver's process")
	_, err = h2.Call(e.ctx, "count", nil)
	require.NoError(t, err)
	require.NoError(t, c.Close()) // the connection's end ends h2's channel too
	require.Eventually(t, func() bool { return socketsOf(t, pid) == before }, 5*time.Second, 5*time.Millisecond)

	e.unplugAndFinish(nub)
}

// TestDirectCallDriverKilled: the driver's process SIGKILLed under a
// direct call: the call fails with ErrTerminated at once, the application
// hears the crash from the daemon, and the relaunched driver serves a new
// handle directly.
func TestDirectCallDriverKilled(t *testing.T) {
	e, nub, pid := counterBundle(t)

	c := e.dial()
	defer c.Close()
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.True(t, h.Direct())
	errc := make(chan error, 1)
	go func() { _, err := h.Call(e.ctx, "wait", nil); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	kill(t, pid)
	select {
	case err := <-errc:
		require.ErrorIs(t, err, userclient.ErrTerminated)
	case <-e.ctx.Done():
		t.Fatal("the call was not ended by the driver's death")
	}
	n := nextNotification(t, h, "ServiceIsTerminated")
	require.Equal(t, "crashed", n.Cause)
	require.NoError(t, h.Close())

	e.instance(nub) // relaunched
	h, err = c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.True(t, h.Direct())
	out, err := h.Call(e.ctx, "count", nil)
	require.NoError(t, err)
	var r counter.Reply
	require.NoError(t, json.Unmarshal(out, &r))
	require.NotEqual(t, pid, r.PID)
	require.NoError(t, h.Close())
	require.NoError(t, c.Close())
	e.unplugAndFinish(nub)
}

// rawConn is a user-client connection spoken by hand.
type rawConn struct {
	nc net.Conn
	d  *wire.Decoder
}

func rawHello(t *testing.T, sock, hello string) (*rawConn, wire.Frame) {
	nc, err := net.Dial("unix", sock)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	r := &rawConn{nc: nc, d: wire.NewDecoder(nc, 0)}
	r.send(t, wire.Frame{Type: wire.TypeHello, ID: 1, Control: []byte(hello)})
	return r, r.next(t)
}

func (r *rawConn) send(t *testing.T, f wire.Frame) {
	b, err := wire.AppendFrame(nil, &f, wire.DefaultMaxFrame)
	require.NoError(t, err)
	_, err = r.nc.Write(b)
	require.NoError(t, err)
}

func (r *rawConn) next(t *testing.T) wire.Frame {
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := r.d.ReadFrame()
	require.NoError(t, err)
	return f
}

// openRaw opens the counter on a hand-spoken version 4 connection and
// returns the direct channel's token its reply offers.
func openRaw(t *testing.T, sock string) (*rawConn, string) {
	r, w := rawHello(t, sock, `{"protocol":"drvkit-userclient","versions":[4]}`)
	require.Equal(t, wire.TypeWelcome, w.Type)
	r.send(t, wire.Frame{Type: wire.TypeOpen, ID: 2, Control: []byte(`{"match":{"class":"` + counter.Class + `"}}`)})
	f := r.next(t)
	require.Equal(t, wire.TypeReply, f.Type, "%s", f.Control)
	var rep wire.OpenReply
	require.NoError(t, json.Unmarshal(f.Control, &rep))
	require.NotEmpty(t, rep.Direct, "a version 4 open of a Go SDK bundle offers a direct channel")
	return r, rep.Direct
}

func directHello(token string) string {
	return `{"protocol":"drvkit-userclient","versions":[4],"direct":"` + token + `"}`
}

// TestDirectChannelHostile: a token is good once, for the process that
// opened the handle, on a version 4 connection; a channel that gets
// garbage is closed by the driver's process with a protocol error, and
// the driver serves its other applications on — the Go SDK's and the
// Python sample's.
func TestDirectChannelHostile(t *testing.T) {
	for _, tc := range []struct {
		name string
		load func(e *env)
	}{
		{"go", func(e *env) { e.loadBundle("counter", "") }},
		{"python", func(e *env) { e.load(e.h.Entry(pythonBundle(e.t))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.load(e)
			nub := e.plug("1-1:1.0")
			e.instance(nub)
			directHostile(t, e, nub)
		})
	}
}

func directHostile(t *testing.T, e *env, nub *driver.Service) {
	sock := e.srv.Addr()

	owner, token := openRaw(t, sock)
	_ = owner

	// Another process with the token is refused.
	out, err := exec.Command(testExe, driverArg, "directthief", sock, token).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "permission")
	require.Contains(t, string(out), "opened by pid "+strconv.Itoa(os.Getpid()))

	// Version 3 cannot take a channel.
	v3, f := rawHello(t, sock, `{"protocol":"drvkit-userclient","versions":[3],"direct":"`+token+`"}`)
	v3.nc.Close()
	require.Equal(t, wire.TypeError, f.Type)
	require.Contains(t, string(f.Control), "needs protocol version 4")

	// The owner takes it (the thief's attempt did not spend it) …
	ch, f := rawHello(t, sock, directHello(token))
	require.Equal(t, wire.TypeWelcome, f.Type, "%s", f.Control)
	var w wire.WelcomeMsg
	require.NoError(t, json.Unmarshal(f.Control, &w))
	require.True(t, w.Direct)
	ch.send(t, wire.Frame{Type: wire.TypeCall, ID: 7, Control: []byte(`{"handle":1,"method":"echo"}`), Data: []byte("direct")})
	f = ch.next(t)
	require.Equal(t, wire.TypeReply, f.Type, "%s", f.Control)
	require.Equal(t, uint64(7), f.ID)
	require.Equal(t, "direct", string(f.Data))

	// … once.
	again, f := rawHello(t, sock, directHello(token))
	again.nc.Close()
	require.Equal(t, wire.TypeError, f.Type)
	require.Contains(t, string(f.Control), "no open handle offers this token")

	// An open or an admin request on the channel is a protocol error;
	// the driver's process closes the channel.
	ch.send(t, wire.Frame{Type: wire.TypeOpen, ID: 8, Control: []byte(`{"match":{"class":"x"}}`)})
	f = ch.next(t)
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, wire.FlagFatal, f.Flags)
	require.Contains(t, string(f.Control), "serves call, cancel and ping")
	_, err = ch.d.ReadFrame()
	require.Error(t, err, "the channel is closed after the fatal error")

	// Garbage on a second handle's channel: the same, and the driver
	// serves an application on.
	owner2, token2 := openRaw(t, sock)
	ch2, f := rawHello(t, sock, directHello(token2))
	require.Equal(t, wire.TypeWelcome, f.Type)
	_, err = ch2.nc.Write([]byte("\x00\x00\x00\x05garbage"))
	require.NoError(t, err)
	f = ch2.next(t)
	require.Equal(t, wire.TypeError, f.Type)
	require.Contains(t, string(f.Control), "protocol")

	c := e.dial()
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.True(t, h.Direct())
	got, err := h.Call(e.ctx, "echo", []byte("fine"))
	require.NoError(t, err)
	require.Equal(t, "fine", string(got))
	require.NoError(t, c.Close())

	for _, r := range []*rawConn{owner, owner2, ch, ch2} {
		r.nc.Close()
	}
	e.unplugAndFinish(nub)
}

// TestDirectCallsOff: a client that asks for none, and a server
// configured with none, keep calls on the daemon's path.
func TestDirectCallsOff(t *testing.T) {
	e, nub, _ := counterBundle(t)
	c := e.dial(userclient.WithoutDirectCalls())
	h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
	require.NoError(t, err)
	require.False(t, h.Direct())
	_, err = h.Call(e.ctx, "count", nil)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	e.unplugAndFinish(nub)
}

// directThief is the test binary in directthief mode: another process
// that tries to take a channel with a token it learnt; it prints what the
// daemon answered.
func directThief(sock, token string) {
	nc, err := net.Dial("unix", sock)
	if err != nil {
		os.Stdout.WriteString("dial: " + err.Error())
		os.Exit(0)
	}
	b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeHello, ID: 1, Control: []byte(directHello(token))}, wire.DefaultMaxFrame)
	_, _ = nc.Write(b)
	f, err := wire.NewDecoder(nc, 0).ReadFrame()
	if err != nil {
		os.Stdout.WriteString("read: " + err.Error())
		os.Exit(0)
	}
	err = wire.DecodeError(f.Control)
	if f.Type != wire.TypeError {
		err = errors.New("welcomed: " + f.Type.String())
	}
	os.Stdout.WriteString(f.Type.String() + ": " + err.Error())
	os.Exit(0)
}

// directAppHandles is how many handles, each with its channel, the
// application of TestDirectChannelsAppKilled opens.
const directAppHandles = 64

// TestDirectChannelsAppKilled: an application process with 64 handles on
// the driver, each with its direct channel, 200 calls at once on one of
// them and a call in flight on every one, is SIGKILLed: every channel is
// closed in the driver's process, every user client freed, the trace
// valid and nothing left.
func TestDirectChannelsAppKilled(t *testing.T) {
	e, nub, pid := counterBundle(t)
	before := socketsOf(t, pid)

	app := exec.Command(testExe, driverArg, "directapp", e.srv.Addr())
	app.Stderr = os.Stderr
	out, err := app.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, app.Start())
	line := make([]byte, 64)
	n, err := out.Read(line)
	require.NoError(t, err, "the application said nothing")
	require.Equal(t, "ready\n", string(line[:n]))
	require.Equal(t, before+directAppHandles, socketsOf(t, pid), "a channel per handle in the driver's process")
	require.Len(t, userClients(e), directAppHandles)

	require.NoError(t, app.Process.Kill())
	_ = app.Wait()
	require.Eventually(t, func() bool { return socketsOf(t, pid) == before && len(userClients(e)) == 0 },
		10*time.Second, 10*time.Millisecond, "channels %d (had %d), user clients %d", socketsOf(t, pid), before, len(userClients(e)))
	e.unplugAndFinish(nub)
}

// userClients are the registry's user clients.
func userClients(e *env) []*driver.Service {
	var ucs []*driver.Service
	for _, s := range e.r.Services() {
		if s.Class() == "UserClient" {
			ucs = append(ucs, s)
		}
	}
	return ucs
}

// directApp is the test binary in directapp mode: it opens the counter
// directAppHandles times (each handle takes its channel), makes 200 calls
// at once on the first, starts a call that waits on every handle, says
// "ready" and waits to be killed.
func directApp(sock string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "direct application:", err)
		os.Exit(7)
	}
	ctx := context.Background()
	c, err := userclient.Dial(ctx, sock)
	if err != nil {
		fail(err)
	}
	hs := make([]*userclient.Handle, directAppHandles)
	for i := range hs {
		if hs[i], err = c.Open(ctx, userclient.Match{Class: counter.Class}); err != nil {
			fail(err)
		}
		if !hs[i].Direct() {
			fail(fmt.Errorf("handle %d has no direct channel", i))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := []byte(strconv.Itoa(i))
			out, err := hs[0].Call(ctx, "echo", in)
			if err == nil && string(out) != string(in) {
				err = fmt.Errorf("echo %q answered %q", in, out)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail(err)
	}
	for _, h := range hs {
		go func() { _, _ = h.Call(ctx, "wait", nil) }()
	}
	time.Sleep(50 * time.Millisecond) // the waits reach the driver
	os.Stdout.WriteString("ready\n")
	select {}
}

package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const greeting = `{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}`

// fakeQEMU is a QMP server on a real Unix socket. handle answers each
// command; it returns the lines to send (replies and events), in order.
type fakeQEMU struct {
	t      *testing.T
	path   string
	ln     net.Listener
	handle func(cmd string, args map[string]any, id json.RawMessage) []string

	mu       sync.Mutex
	commands []string
	conns    []net.Conn
	wg       sync.WaitGroup
}

func newFake(t *testing.T, handle func(cmd string, args map[string]any, id json.RawMessage) []string) *fakeQEMU {
	t.Helper()
	f := &fakeQEMU{t: t, path: filepath.Join(t.TempDir(), "qmp.sock"), handle: handle}
	ln, err := net.Listen("unix", f.path)
	require.NoError(t, err)
	f.ln = ln
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *fakeQEMU) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

func (f *fakeQEMU) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *fakeQEMU) serve(c net.Conn) {
	defer f.wg.Done()
	defer c.Close()
	w := bufio.NewWriter(c)
	send := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	send(greeting)
	sc := bufio.NewScanner(c)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments map[string]any  `json:"arguments"`
			ID        json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			send(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
			continue
		}
		f.mu.Lock()
		f.commands = append(f.commands, req.Execute)
		f.mu.Unlock()
		if !negotiated {
			if req.Execute != "qmp_capabilities" {
				send(fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}, "id": %s}`, req.ID))
				continue
			}
			negotiated = true
			send(fmt.Sprintf(`{"return": {}, "id": %s}`, req.ID))
			continue
		}
		f.mu.Lock()
		handle := f.handle
		f.mu.Unlock()
		if handle == nil {
			send(fmt.Sprintf(`{"return": {}, "id": %s}`, req.ID))
			continue
		}
		send(handle(req.Execute, req.Arguments, req.ID)...)
	}
}

func (f *fakeQEMU) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.commands...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ret(id json.RawMessage, v string) string { return fmt.Sprintf(`{"return": %s, "id": %s}`, v, id) }

const ts = `"timestamp": {"seconds": 1700000000, "microseconds": 250000}`

func TestDialNegotiatesAndExecutes(t *testing.T) {
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		switch cmd {
		case "query-status":
			return []string{ret(id, `{"status": "running", "running": true}`)}
		case "device_del":
			return []string{fmt.Sprintf(`{"error": {"class": "DeviceNotFound", "desc": "Device '%s' not found"}, "id": %s}`, args["id"], id)}
		}
		return []string{fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}, "id": %s}`, cmd, id)}
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	require.Equal(t, 7, c.Greeting().Version.QEMU.Major)
	require.Equal(t, []string{"oob"}, c.Greeting().Capabilities)

	out, err := c.Execute(ctxT(t), "query-status", nil)
	require.NoError(t, err)
	var st struct{ Status string }
	require.NoError(t, json.Unmarshal(out, &st))
	require.Equal(t, "running", st.Status)

	_, err = c.Execute(ctxT(t), "device_del", map[string]any{"id": "nope"})
	var qe *Error
	require.ErrorAs(t, err, &qe)
	require.Equal(t, "DeviceNotFound", qe.Class)
	require.Equal(t, "device_del", qe.Command)
	require.Contains(t, qe.Error(), "Device 'nope' not found")
	require.False(t, IsPermissionConflict(err))
	require.Equal(t, []string{"qmp_capabilities", "query-status", "device_del"}, f.seen())
}

func TestConcurrentCommandsMatchByID(t *testing.T) {
	// Replies come back in reverse order of the requests: only id
	// matching gets each caller its own answer.
	var mu sync.Mutex
	var held []string
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, ret(id, fmt.Sprintf(`{"n": %v}`, args["n"])))
		if len(held) < 8 {
			return nil
		}
		out := make([]string, 0, len(held))
		for i := len(held) - 1; i >= 0; i-- {
			out = append(out, held[i])
		}
		return out
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.Execute(ctxT(t), "echo", map[string]any{"n": i})
			if err != nil {
				errs <- err
				return
			}
			var r struct{ N int }
			if err := json.Unmarshal(out, &r); err != nil || r.N != i {
				errs <- fmt.Errorf("call %d got %s (%v)", i, out, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestEventsAreLoggedAndWaitedFor(t *testing.T) {
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		if cmd == "device_del" {
			// QEMU replies at once; the event follows when the guest
			// has let go — here after an unrelated event.
			return []string{
				ret(id, `{}`),
				`{"event": "RESUME", ` + ts + `}`,
				fmt.Sprintf(`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/%s/unattached", "device": ""}, %s}`, args["id"], ts),
				fmt.Sprintf(`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/%s", "device": "%s"}, %s}`, args["id"], args["id"], ts),
			}
		}
		return []string{ret(id, `{}`)}
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	mark := c.Mark()
	require.NoError(t, c.DeviceDel(ctxT(t), "usbstick"))
	evs := c.Events(mark)
	require.Len(t, evs, 3)
	require.Equal(t, "RESUME", evs[0].Name)
	require.Equal(t, time.Unix(1700000000, 250000000), evs[0].Time)
	require.Equal(t, "usbstick", evs[2].Str("device"))
	require.Equal(t, mark+3, evs[2].Seq)

	// An event already logged is found by a later wait from an old mark…
	e, err := c.WaitEvent(ctxT(t), mark, "RESUME", nil)
	require.NoError(t, err)
	require.Equal(t, mark+1, e.Seq)
	// …and a wait for one that never comes ends with the context.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.WaitEvent(short, c.Mark(), "SHUTDOWN", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "wait SHUTDOWN", oe.Op)
}

func TestDeviceAddRetriesPermissionConflict(t *testing.T) {
	var mu sync.Mutex
	tries := 0
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		mu.Lock()
		defer mu.Unlock()
		if cmd != "device_add" {
			return []string{ret(id, `{}`)}
		}
		tries++
		if tries < 3 {
			return []string{fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "Permission conflict on node '%s': permissions 'write' are both required by an unnamed block device (uses node '%s' as 'root' child) and unshared by block device usbstick"}, "id": %s}`, args["drive"], args["drive"], id)}
		}
		return []string{ret(id, `{}`)}
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	n, err := c.DeviceAdd(ctxT(t), map[string]any{"driver": "usb-storage", "drive": "usbdisk", "id": "usbstick"})
	require.NoError(t, err)
	require.Equal(t, 3, n)

	// A different error is not retried.
	f.mu.Lock()
	f.handle = func(cmd string, args map[string]any, id json.RawMessage) []string {
		return []string{fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "Duplicate device ID 'usbstick'"}, "id": %s}`, id)}
	}
	f.mu.Unlock()
	n, err = c.DeviceAdd(ctxT(t), map[string]any{"driver": "usb-storage", "id": "usbstick"})
	require.Equal(t, 1, n)
	var qe *Error
	require.ErrorAs(t, err, &qe)
	require.Contains(t, qe.Desc, "Duplicate")
}

func TestDeviceAddGivesUpWithContext(t *testing.T) {
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		return []string{fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "Permission conflict on node 'x'"}, "id": %s}`, id)}
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	n, err := c.DeviceAdd(ctx, map[string]any{"driver": "scsi-hd"})
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, IsPermissionConflict(err), "the last QEMU error is kept: %v", err)
	require.Greater(t, n, 1)
}

func TestServerGoneFailsPendingAndLaterCalls(t *testing.T) {
	hang := make(chan struct{})
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		<-hang // never answers
		return nil
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Execute(ctxT(t), "stop", nil)
		errc <- err
	}()
	// QEMU dies: the server end closes.
	require.Eventually(t, func() bool { return len(f.seen()) == 2 }, 5*time.Second, time.Millisecond)
	f.mu.Lock()
	for _, conn := range f.conns {
		conn.Close()
	}
	f.mu.Unlock()
	err = <-errc
	require.ErrorIs(t, err, ErrClosed)
	<-c.Done()
	_, err = c.Execute(ctxT(t), "cont", nil)
	require.ErrorIs(t, err, ErrClosed)
	_, err = c.WaitEvent(ctxT(t), 0, "SHUTDOWN", nil)
	require.ErrorIs(t, err, ErrClosed)
	close(hang)
}

func TestExecuteTimesOut(t *testing.T) {
	hang := make(chan struct{})
	defer close(hang)
	f := newFake(t, func(cmd string, args map[string]any, id json.RawMessage) []string {
		<-hang
		return nil
	})
	c, err := Dial(ctxT(t), f.path)
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = c.Execute(ctx, "stop", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Equal(t, "execute stop", oe.Op)
}

func TestHandshakeErrors(t *testing.T) {
	dir := t.TempDir()
	t.Run("no server", func(t *testing.T) {
		_, err := Dial(ctxT(t), filepath.Join(dir, "absent.sock"))
		var oe *OpError
		require.ErrorAs(t, err, &oe)
		require.Equal(t, "dial", oe.Op)
	})
	serveOnce := func(t *testing.T, first string, hold bool) string {
		path := filepath.Join(t.TempDir(), "s.sock")
		ln, err := net.Listen("unix", path)
		require.NoError(t, err)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			if first != "" {
				c.Write([]byte(first + "\n"))
			}
			if hold {
				// Read until the client gives up.
				buf := make([]byte, 256)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		return path
	}
	t.Run("not a greeting", func(t *testing.T) {
		_, err := Dial(ctxT(t), serveOnce(t, `{"return": {}}`, false))
		require.ErrorIs(t, err, ErrProtocol)
	})
	t.Run("closed before greeting", func(t *testing.T) {
		_, err := Dial(ctxT(t), serveOnce(t, "", false))
		require.ErrorIs(t, err, ErrClosed)
	})
	t.Run("silent server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, serveOnce(t, "", true))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("capabilities never answered", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, serveOnce(t, greeting, true))
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		kind kind
		id   string
		err  bool
	}{
		{"greeting", greeting, kindGreeting, "", false},
		{"return", `{"return": {}, "id": "drvkit-1"}`, kindReturn, "drvkit-1", false},
		{"numeric id", `{"return": [], "id": 7}`, kindReturn, "7", false},
		{"error", `{"error": {"class": "GenericError", "desc": "x"}, "id": "a"}`, kindError, "a", false},
		{"event", `{"event": "SHUTDOWN", "data": {"guest": true}, ` + ts + `}`, kindEvent, "", false},
		{"crlf", "{\"return\": {}}\r\n", kindReturn, "", false},
		{"empty", ``, 0, "", true},
		{"array", `[1]`, 0, "", true},
		{"unknown", `{"foo": 1}`, 0, "", true},
		{"ambiguous", `{"return": {}, "event": "X"}`, 0, "", true},
		{"nameless event", `{"event": ""}`, 0, "", true},
		{"truncated", `{"return": {`, 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decode([]byte(tc.in))
			if tc.err {
				require.ErrorIs(t, err, ErrProtocol)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.kind, m.kind)
			require.Equal(t, tc.id, m.id)
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		greeting,
		`{"return": {}, "id": "drvkit-1"}`,
		`{"error": {"class": "GenericError", "desc": "Permission conflict on node 'usbdisk'"}, "id": "drvkit-2"}`,
		`{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/usbstick", "device": "usbstick"}, ` + ts + `}`,
		`{"return": {}, "event": "X"}`,
		`{"timestamp": {"seconds": -1, "microseconds": 99999999}, "event": "A"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error does not wrap ErrProtocol: %v", err)
			}
			return
		}
		switch m.kind {
		case kindGreeting, kindReturn:
		case kindError:
			if m.err == nil {
				t.Fatal("error message without *Error")
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Fatal("event without name")
			}
		default:
			t.Fatalf("decoded to kind %d", m.kind)
		}
	})
}

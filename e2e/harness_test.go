//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/stretchr/testify/require"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConsoleLines(t *testing.T) {
	var log bytes.Buffer
	c := newConsole(&log)
	c.Write([]byte("[    1.0] boot\r\nE2E bo"))
	require.Equal(t, 1, c.Mark())
	done := make(chan []string, 1)
	go func() {
		m, err := c.WaitLine(ctxT(t, 5*time.Second), 0, readyRE)
		if err != nil {
			done <- []string{err.Error()}
			return
		}
		done <- m
	}()
	c.Write([]byte("ot PASS kernel=6.1\nE2E ready\n"))
	require.Equal(t, []string{"E2E ready", "ready", "", ""}, <-done)
	require.Equal(t, []string{"E2E boot PASS kernel=6.1", "E2E ready"}, c.Tail(2))
	require.Equal(t, []string{"E2E ready"}, c.Lines(2))
	require.Equal(t, "[    1.0] boot\r\nE2E boot PASS kernel=6.1\nE2E ready\n", log.String(), "the log is the raw output")

	// A failed boot is reported through the same expression.
	m, err := c.WaitLine(ctxT(t, time.Second), 0, regexp.MustCompile(`^E2E boot (PASS|FAIL)`))
	require.NoError(t, err)
	require.Equal(t, "PASS", m[1])

	_, err = c.WaitLine(ctxT(t, 50*time.Millisecond), 0, regexp.MustCompile(`never`))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	c.Write([]byte("half a line"))
	c.close()
	_, err = c.WaitLine(ctxT(t, 5*time.Second), 0, regexp.MustCompile(`never`))
	require.ErrorContains(t, err, "before the guest stopped")
	require.Equal(t, "half a line", c.Tail(1)[0])
}

func TestMatch(t *testing.T) {
	u := &agentproto.Uevent{Action: "add", Devpath: "/devices/pci0000:00/0000:00:02.0/usb2/2-1", Subsystem: "usb",
		Env: map[string]string{"DEVTYPE": "usb_device", "PRODUCT": "46f4/1/0"}}
	for _, tc := range []struct {
		m    Match
		want bool
	}{
		{Match{}, true},
		{Match{Action: "add", Subsystem: "usb", Devpath: "/usb2/"}, true},
		{Match{Env: map[string]string{"PRODUCT": "46f4/1/*"}}, true},
		{Match{Env: map[string]string{"PRODUCT": "46f4/1"}}, false},
		{Match{Env: map[string]string{"BUSNUM": "*"}}, false},
		{Match{Action: "remove"}, false},
		{Match{Subsystem: "block"}, false},
		{Match{Devpath: "/virtio"}, false},
	} {
		require.Equal(t, tc.want, tc.m.Matches(u), "%s", tc.m)
	}
}

// fakeGuest answers agent requests on a real Unix socket.
type fakeGuest struct {
	ln   net.Listener
	path string
	wg   sync.WaitGroup
	conn chan net.Conn
}

func newFakeGuest(t *testing.T, handle func(w func(any), r agentproto.Request)) *fakeGuest {
	g := &fakeGuest{path: filepath.Join(t.TempDir(), "ctl.sock"), conn: make(chan net.Conn, 1)}
	ln, err := net.Listen("unix", g.path)
	require.NoError(t, err)
	g.ln = ln
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		g.conn <- c
		var wmu sync.Mutex
		w := func(v any) {
			b, _ := json.Marshal(v)
			wmu.Lock()
			c.Write(append(b, '\n'))
			wmu.Unlock()
		}
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			r, err := agentproto.DecodeRequest(sc.Bytes())
			if err != nil {
				continue
			}
			handle(w, r)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-g.conn:
			c.Close()
		default:
		}
		g.wg.Wait()
	})
	return g
}

func dialAgent(t *testing.T, path string) *Agent {
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	a := newAgent(c, nil)
	t.Cleanup(a.close)
	return a
}

func TestAgentCallsAndUevents(t *testing.T) {
	g := newFakeGuest(t, func(w func(any), r agentproto.Request) {
		switch r.Op {
		case agentproto.OpHello:
			w(agentproto.Response{ID: r.ID, OK: true, Result: json.RawMessage(`{"kernel":"6.1.0-56-amd64"}`)})
		case agentproto.OpSubscribe:
			w(agentproto.Response{ID: r.ID, OK: true})
			for i, a := range []string{"add", "bind", "remove"} {
				w(agentproto.Event{Event: "uevent", Uevent: &agentproto.Uevent{
					Action: a, Devpath: "/devices/x/usb2/2-1", Subsystem: "usb", Seqnum: uint64(i + 1),
					Env: map[string]string{"DEVTYPE": "usb_device"}}})
			}
		case "progress":
			w(agentproto.Event{Event: "step.one"})
			w(agentproto.Response{ID: r.ID, OK: true})
		case "slow":
			// Answered after a later request: ids, not order, match.
			go func() {
				time.Sleep(50 * time.Millisecond)
				w(agentproto.Response{ID: r.ID, OK: true, Result: json.RawMessage(`"slow"`)})
			}()
		default:
			w(agentproto.Response{ID: r.ID, Error: fmt.Sprintf("unknown op %q", r.Op)})
		}
	})
	a := dialAgent(t, g.path)
	ctx := ctxT(t, 5*time.Second)
	var h agentproto.Hello
	require.NoError(t, a.Call(ctx, agentproto.OpHello, nil, &h))
	require.Equal(t, "6.1.0-56-amd64", h.Kernel)

	slow := make(chan error, 1)
	var slowRes string
	go func() { slow <- a.Call(ctx, "slow", nil, &slowRes) }()
	err := a.Call(ctx, "bogus", map[string]int{"x": 1}, nil)
	var ge *GuestError
	require.ErrorAs(t, err, &ge)
	require.Equal(t, "bogus", ge.Op)
	require.NoError(t, <-slow)
	require.Equal(t, "slow", slowRes)

	emark := a.EventMark()
	require.NoError(t, a.Call(ctx, "progress", nil, nil))
	e, err := a.WaitEvent(ctx, emark, "step.one")
	require.NoError(t, err)
	require.Equal(t, "step.one", e.Event)
	_, err = a.WaitEvent(ctxT(t, 50*time.Millisecond), a.EventMark(), "step.one")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Empty(t, a.Uevents(0, Match{}), "progress events are not uevents")

	mark := a.UeventMark()
	require.NoError(t, a.Call(ctx, agentproto.OpSubscribe, nil, nil))
	u, err := a.WaitUevent(ctx, mark, Match{Action: "remove", Subsystem: "usb"})
	require.NoError(t, err)
	require.Equal(t, uint64(3), u.Seqnum)
	require.Len(t, a.Uevents(mark, Match{Env: map[string]string{"DEVTYPE": "usb_device"}}), 3)
	require.Empty(t, a.Uevents(a.UeventMark(), Match{}))
	_, err = a.WaitUevent(ctxT(t, 50*time.Millisecond), a.UeventMark(), Match{Action: "add"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestAgentGuestGone(t *testing.T) {
	g := newFakeGuest(t, func(w func(any), r agentproto.Request) {}) // never answers
	a := dialAgent(t, g.path)
	errc := make(chan error, 1)
	go func() { errc <- a.Call(ctxT(t, 5*time.Second), agentproto.OpHello, nil, nil) }()
	c := <-g.conn
	// The call is pending (or about to be); QEMU dies.
	time.Sleep(20 * time.Millisecond)
	c.Close()
	require.ErrorIs(t, <-errc, ErrAgentGone)
	require.ErrorIs(t, a.Call(ctxT(t, time.Second), agentproto.OpHello, nil, nil), ErrAgentGone)
	_, err := a.WaitUevent(ctxT(t, time.Second), 0, Match{})
	require.ErrorIs(t, err, ErrAgentGone)
	require.True(t, errors.Is(a.Err(), ErrAgentGone))
}

func TestAgentCallTimesOut(t *testing.T) {
	g := newFakeGuest(t, func(w func(any), r agentproto.Request) {})
	a := dialAgent(t, g.path)
	err := a.Call(ctxT(t, 50*time.Millisecond), agentproto.OpUSBList, nil, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestBootNeedsAssets(t *testing.T) {
	_, err := Boot(context.Background(), Config{})
	require.ErrorContains(t, err, "Assets is nil")
}

func TestBootReportsQEMUFailure(t *testing.T) {
	// A "QEMU" that exits at once: Boot returns promptly with the cause
	// instead of waiting for sockets that never appear.
	dir := t.TempDir()
	m, err := Boot(ctxT(t, 10*time.Second), Config{
		Assets: &Assets{Cache: dir, QEMU: "/bin/false", Kernel: "k", Initrd: "i"},
	})
	require.ErrorContains(t, err, "QEMU exited")
	require.NotNil(t, m)
	require.FileExists(t, m.LogPath)
}

func TestAgentRemoteShellHelpers(t *testing.T) {
	var mu sync.Mutex
	var seen []agentproto.Request
	g := newFakeGuest(t, func(w func(any), r agentproto.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		switch r.Op {
		case agentproto.OpExec, agentproto.OpWait:
			w(agentproto.Response{ID: r.ID, OK: true, Result: json.RawMessage(`{"exit":2,"stdout":"x\n","stderr":""}`)})
		case agentproto.OpStart:
			w(agentproto.Response{ID: r.ID, OK: true, Result: json.RawMessage(`{"pid":42}`)})
		default:
			w(agentproto.Response{ID: r.ID, OK: true})
		}
	})
	a := dialAgent(t, g.path)
	ctx := ctxT(t, 5*time.Second)
	r, err := a.Exec(ctx, "drvctl", "inspect")
	require.NoError(t, err)
	require.Equal(t, 2, r.Exit)
	pid, err := a.Start(ctx, "serve", "drvctl", "serve")
	require.NoError(t, err)
	require.Equal(t, 42, pid)
	require.NoError(t, a.Signal(ctx, "serve", 9))
	_, err = a.Wait(ctx, "serve")
	require.NoError(t, err)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, seen, 4)
	var x agentproto.ExecArgs
	require.NoError(t, json.Unmarshal(seen[0].Args, &x))
	require.Equal(t, []string{"drvctl", "inspect"}, x.Argv)
	require.Positive(t, x.TimeoutMs, "the context's deadline bounds the guest side too")
	require.LessOrEqual(t, x.TimeoutMs, 5000)
	var s agentproto.SignalArgs
	require.NoError(t, json.Unmarshal(seen[2].Args, &s))
	require.Equal(t, agentproto.SignalArgs{Name: "serve", Signal: 9}, s)
}

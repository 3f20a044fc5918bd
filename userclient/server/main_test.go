package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// The test binary doubles as the application in crash tests: re-executed
// with USERCLIENT_CHILD=role it plays that role against USERCLIENT_SOCK and
// reports progress on stdout, one line per step.
func TestMain(m *testing.M) {
	if role := os.Getenv("USERCLIENT_CHILD"); role != "" {
		os.Exit(runChild(role, os.Getenv("USERCLIENT_SOCK")))
	}
	refcount.TraceAll() // tag pairing enforced on every path the tests take
	leaktest.Main(m)
}

func runChild(role, sock string) int {
	ctx := context.Background()
	say := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	block := func() int { select {} }
	if role == "plain" || role == "hog" {
		return runFloorChild(role, sock)
	}
	if role == "inherit" || role == "inherit-exit" {
		// A grandchild that inherited the connection as fd 3.
		f := os.NewFile(3, "inherited")
		if role == "inherit-exit" {
			f.Close()
			return 0
		}
		say("inherited")
		_, err := io.Copy(io.Discard, f)
		say("eof %v", err)
		return 0
	}
	if role == "handshake" {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			say("dial: %v", err)
			return 1
		}
		hello, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeHello, ID: 1, Control: []byte(`{"protocol":"drvkit-userclient","versions":[1]}`)}, wire.DefaultMaxFrame)
		nc.Write(hello[:len(hello)/2]) // and never the rest
		say("connected")
		return block()
	}
	// Connected by hand, so that the fork roles can pass the socket on.
	nc, err := net.Dial("unix", sock)
	if err != nil {
		say("dial: %v", err)
		return 1
	}
	c, err := userclient.NewClient(ctx, nc)
	if err != nil {
		say("handshake: %v", err)
		return 1
	}
	if role == "permission" {
		_, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
		say("open TestDevice: %v no_service=%v", err, errors.Is(err, userclient.ErrNoService))
		_, err = c.Open(ctx, userclient.Match{Class: "NoSuchDevice"})
		say("open NoSuchDevice: %v no_service=%v", err, errors.Is(err, userclient.ErrNoService))
		say("ping: %v", c.Ping(ctx))
		h, err := c.Open(ctx, userclient.Match{Class: "PublicDevice"})
		if err == nil {
			out, err := h.Call(ctx, "echo", []byte("hi"))
			say("open PublicDevice: ok call %q %v", out, err)
			h.Close()
		} else {
			say("open PublicDevice: %v", err)
		}
		_, _, err = c.Admin(ctx, userclient.AdminTerminate, map[string]int{"id": 1}, nil)
		say("admin: %v permission=%v", err, errors.Is(err, userclient.ErrPermission))
		c.Close()
		return 0
	}
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	if err != nil {
		say("open: %v", err)
		return 1
	}
	say("opened %d", h.ClientID())
	switch role {
	case "open", "hold":
		return block()
	case "call":
		_, err := h.Call(ctx, "block", nil)
		say("call returned %v", err)
		return block()
	case "unread":
		h.Notifications() // asked for, never read: the socket backs up
		return block()
	case "fork", "fork-child-exits":
		f, err := nc.(*net.UnixConn).File()
		if err != nil {
			say("file: %v", err)
			return 1
		}
		gc := exec.Command(os.Args[0])
		gc.Env = append(os.Environ(), "USERCLIENT_CHILD=inherit")
		if role == "fork-child-exits" {
			gc.Env = append(os.Environ(), "USERCLIENT_CHILD=inherit-exit")
		}
		gc.ExtraFiles = []*os.File{f}
		gc.Stdout = os.Stdout
		if err := gc.Start(); err != nil {
			say("grandchild: %v", err)
			return 1
		}
		f.Close()
		if role == "fork-child-exits" {
			gc.Wait()
			say("grandchild exited")
			say("ping %v", c.Ping(ctx))
		} else {
			say("grandchild %d", gc.Process.Pid)
		}
		return block()
	}
	say("unknown role %q", role)
	return 1
}

// child is a running application process.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(t testing.TB, bin, role, sock string, cred *syscall.Credential) *child {
	t.Helper()
	if bin == "" {
		bin = os.Args[0]
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "USERCLIENT_CHILD="+role, "USERCLIENT_SOCK="+sock)
	cmd.Stderr = os.Stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(c.lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			c.lines <- s.Text()
		}
	}()
	t.Cleanup(func() { c.kill(); c.cmd.Wait() })
	return c
}

// expect waits for the next line and checks its prefix.
func (c *child) expect(t testing.TB, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		require.True(t, ok, "child exited before %q", prefix)
		require.True(t, strings.HasPrefix(l, prefix), "child said %q, want %q…", l, prefix)
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("child did not say %q", prefix)
		return ""
	}
}

func (c *child) opened(t testing.TB) uint64 {
	var id uint64
	_, err := fmt.Sscanf(c.expect(t, "opened "), "opened %d", &id)
	require.NoError(t, err)
	return id
}

func (c *child) kill() time.Time {
	now := time.Now()
	if c.cmd.Process != nil {
		c.cmd.Process.Signal(syscall.SIGKILL)
	}
	return now
}

// testServer starts a server on a fresh socket over a fake registry with
// one TestDevice.
type testServer struct {
	*Server
	reg  *testRegistry
	dev  *testDevice
	dir  string
	sock string
	disc chan disconnect
}

type disconnect struct {
	cred   userclient.Cred
	reason error
	at     time.Time
}

func newTestServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	// Short, world-traversable directory: socket paths are limited to 108
	// bytes, and the permission test connects as another user.
	dir, err := os.MkdirTemp("", "uc")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	leaktest.Check(t) // its cleanup runs last
	ts := &testServer{reg: newTestRegistry(t), dir: dir, sock: filepath.Join(dir, "s"), disc: make(chan disconnect, 4096)}
	ts.dev = ts.reg.publish(t, "TestDevice", "dev0")
	cfg.Path = ts.sock
	if cfg.GID == 0 {
		cfg.GID = -1
	}
	cfg.OnDisconnect = func(c userclient.Cred, r error) { ts.disc <- disconnect{c, r, time.Now()} }
	ts.Server, err = Listen(NewRegistryBackend(ts.reg.r), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, ts.Close())
		ts.reg.checkClean(t)
	})
	return ts
}

// waitDisconnect waits for the connection of pid to end and returns why.
func (ts *testServer) waitDisconnect(t testing.TB, pid int) disconnect {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case d := <-ts.disc:
			if int(d.cred.PID) == pid {
				return d
			}
		case <-deadline:
			t.Fatalf("connection of pid %d did not end", pid)
		}
	}
}

// clientModes are the two ways an application reaches the server; tests
// that must hold for both run once per mode with ts.client.
var clientModes = []string{"socket", "embedded"}

// client connects over the socket ("socket") or in process ("embedded"),
// closed at cleanup.
func (ts *testServer) client(t testing.TB, mode string) *userclient.Client {
	t.Helper()
	if mode == "socket" {
		return ts.dial(t)
	}
	c, err := ts.Embed(context.Background())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func (ts *testServer) dial(t testing.TB) *userclient.Client {
	t.Helper()
	c, err := userclient.Dial(context.Background(), ts.sock)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

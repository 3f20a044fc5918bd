package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/internal/uring"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// The physical floors of the socket benchmarks: plain Go programs doing
// the same exchanges over real Unix sockets — no protocol, no registry,
// nothing but what any daemon on this machine would pay. Each benchmark
// times its floor in the same run, in rounds interleaved with its own, and
// reports the ratio.

// floorSocket listens on a fresh Unix socket in a temporary directory.
func floorSocket(t testing.TB) (*net.UnixListener, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fl")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	path := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close(); os.RemoveAll(dir) })
	return ln, path
}

// floorPair connects a client end to a server end over ln.
func floorPair(t testing.TB, ln *net.UnixListener, path string) (client, server *net.UnixConn) {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	require.NoError(t, err)
	s, err := ln.AcceptUnix()
	require.NoError(t, err)
	return c, s
}

// echoFloor is a plain request/reply exchange: the client writes req, a
// server goroutine reads it whole and writes rep, the client reads rep
// whole. No allocation per exchange, so the benchmark's allocs/op stay
// its own.
type echoFloor struct {
	c, s     *net.UnixConn
	req, rep []byte
	buf      []byte
	done     chan struct{}
}

func newEchoFloor(t testing.TB, req, rep []byte) *echoFloor {
	ln, path := floorSocket(t)
	e := &echoFloor{req: req, rep: rep, buf: make([]byte, len(rep)), done: make(chan struct{})}
	e.c, e.s = floorPair(t, ln, path)
	go func() {
		defer close(e.done)
		in := make([]byte, len(req))
		for {
			if _, err := io.ReadFull(e.s, in); err != nil {
				return
			}
			if _, err := e.s.Write(rep); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { e.c.Close(); <-e.done; e.s.Close() })
	return e
}

func (e *echoFloor) roundTrip(t testing.TB) {
	if _, err := e.c.Write(e.req); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(e.c, e.buf); err != nil {
		t.Fatal(err)
	}
}

// floorKind is the plain program a fan-out benchmark measures against.
type floorKind int

const (
	writeFloor floorKind = iota // one write(2) per socket, the readers count
	ringFloor                   // the writes through io_uring, 64 per system call
	hopFloor                    // write(2), each reader hands over to a goroutine
)

// String is the kind's name in the benchmarks' metrics.
func (k floorKind) String() string {
	return [...]string{writeFloor: "floor", ringFloor: "ring-floor", hopFloor: "hop-floor"}[k]
}

// fanoutFloor writes one frame to n Unix sockets from one goroutine; n
// reader goroutines each read a whole length-prefixed frame and say so.
// The hop floor's readers instead hand a copy of the frame's payload over
// a buffered channel to a goroutine of their own, which says so: the plain
// program an application reading Handle.Notifications() in a goroutine
// of its own is.
type fanoutFloor struct {
	kind    floorKind
	w       []*net.UnixConn
	r       []*net.UnixConn
	got     sync.WaitGroup
	readers sync.WaitGroup

	// The same writes through io_uring, 64 per system call, as the
	// server's fan-out writes them: nil where io_uring is unavailable.
	ring *uring.Ring
	wfd  []int
}

func newFanoutFloor(t testing.TB, n int, kind floorKind) *fanoutFloor {
	ln, path := floorSocket(t)
	f := &fanoutFloor{kind: kind}
	for range n {
		c, s := floorPair(t, ln, path)
		f.w = append(f.w, s)
		f.r = append(f.r, c)
		f.readers.Add(1)
		go f.read(c)
	}
	t.Cleanup(func() {
		for i := range f.w {
			f.w[i].Close()
		}
		f.readers.Wait()
		for i := range f.r {
			f.r[i].Close()
		}
		if f.ring != nil {
			f.ring.Close()
		}
	})
	if r, err := uring.New(ringEntries); err == nil {
		f.ring = r
		for _, w := range f.w {
			rc, err := w.SyscallConn()
			require.NoError(t, err)
			require.NoError(t, rc.Control(func(fd uintptr) { f.wfd = append(f.wfd, int(fd)) }))
		}
	}
	return f
}

// round sends frame as the floor's kind does and waits until every reader
// has it.
func (f *fanoutFloor) round(t testing.TB, frame []byte) time.Duration {
	if f.kind == ringFloor {
		return f.sendRing(t, frame)
	}
	return f.send(t, frame)
}

// sendRing is send through io_uring, ringEntries sockets per system call.
func (f *fanoutFloor) sendRing(t testing.TB, frame []byte) time.Duration {
	f.got.Add(len(f.wfd))
	start := time.Now()
	for i := 0; i < len(f.wfd); i += ringEntries {
		for _, fd := range f.wfd[i:min(len(f.wfd), i+ringEntries)] {
			f.ring.Send(fd, frame, uint64(fd))
		}
		if err := f.ring.Flush(func(fd uint64, n int, err error) {
			if n != len(frame) {
				t.Fatalf("ring floor: socket %d took %d of %d bytes: %v", fd, n, len(frame), err)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	f.got.Wait()
	return time.Since(start)
}

func (f *fanoutFloor) read(c *net.UnixConn) {
	defer f.readers.Done()
	var app chan []byte
	if f.kind == hopFloor {
		// The application's goroutine, with the client's default
		// buffer; it ends when the reader does.
		app = make(chan []byte, 128)
		defer close(app)
		f.readers.Add(1)
		go func() {
			defer f.readers.Done()
			for range app {
				f.got.Done()
			}
		}()
	}
	buf := make([]byte, 4096)
	have := 0
	for {
		n, err := c.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		for have >= 4 {
			size := 4 + int(binary.BigEndian.Uint32(buf))
			if size > len(buf) {
				buf = append(buf, make([]byte, size-len(buf))...)
			}
			if have < size {
				break
			}
			if app != nil {
				app <- slices.Clone(buf[4:size])
			} else {
				f.got.Done()
			}
			have = copy(buf, buf[size:have])
		}
	}
}

// send writes frame to every socket and waits until every reader has it.
func (f *fanoutFloor) send(t testing.TB, frame []byte) time.Duration {
	f.got.Add(len(f.w))
	start := time.Now()
	for _, w := range f.w {
		if _, err := w.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	f.got.Wait()
	return time.Since(start)
}

// killFloor is the kernel's part of crash cleanup: a plain server that
// notices its peer's socket reach EOF when the peer process is SIGKILLed.
type killFloor struct {
	ln   *net.UnixListener
	path string
}

func newKillFloor(t testing.TB) *killFloor {
	ln, path := floorSocket(t)
	return &killFloor{ln: ln, path: path}
}

// plainChild is a plain client process connected to the floor's server,
// waiting to be killed.
type plainChild struct {
	ch *child
	nc *net.UnixConn // the server's end
}

// prepare starts n plain children at once and returns them connected and
// idle, so that their start-up is not in any measured window.
func (k *killFloor) prepare(t testing.TB, n int) []plainChild {
	byPID := make(map[int]*child, n)
	for range n {
		ch := startChild(t, "", "plain", k.path, nil)
		byPID[ch.cmd.Process.Pid] = ch
	}
	out := make([]plainChild, 0, n)
	for range n {
		nc, err := k.ln.AcceptUnix()
		require.NoError(t, err)
		t.Cleanup(func() { nc.Close() })
		var b [1]byte
		_, err = io.ReadFull(nc, b[:]) // it is connected and running
		require.NoError(t, err)
		cred, err := peerCred(nc)
		require.NoError(t, err)
		pid := int(cred.PID)
		ch := byPID[pid]
		require.NotNil(t, ch, "connection from pid %d, not a child", pid)
		ch.expect(t, "connected")
		out = append(out, plainChild{ch: ch, nc: nc})
	}
	return out
}

// trial SIGKILLs a prepared child and returns the time from the kill to
// the server's read returning EOF.
func (k *killFloor) trial(pc plainChild) time.Duration {
	eof := make(chan time.Time, 1)
	go func() {
		var b [1]byte
		_, _ = pc.nc.Read(b[:])
		eof <- time.Now()
	}()
	killed := pc.ch.kill()
	at := <-eof
	pc.ch.cmd.Wait()
	pc.nc.Close()
	return at.Sub(killed)
}

// startHog starts a child process that keeps both cores busy (a second
// process loading the machine) until the test ends.
func startHog(t testing.TB) {
	ch := startChild(t, "", "hog", "", nil)
	ch.expect(t, "hogging")
}

// runFloorChild plays the floor roles: "plain" connects to sock, writes a
// byte and blocks; "hog" spins on every core.
func runFloorChild(role, sock string) int {
	switch role {
	case "plain":
		nc, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Printf("dial: %v\n", err)
			return 1
		}
		if _, err := nc.Write([]byte{1}); err != nil {
			fmt.Printf("write: %v\n", err)
			return 1
		}
		fmt.Println("connected")
		select {}
	case "hog":
		for range runtime.GOMAXPROCS(0) {
			go func() {
				for x := 0; ; x++ {
					_ = x
				}
			}()
		}
		fmt.Println("hogging")
		select {}
	}
	return 1
}

// The benchmarks' ratios are only as good as their floors: each kind
// delivers every frame to every reader, round after round, and its
// goroutines end with it (leaktest.Main checks).
func TestFanoutFloors(t *testing.T) {
	frame := wire.AppendNotification(nil, 1, userclient.Notification{Type: driverMsgType, Service: 2, Data: []byte("x")})
	for _, kind := range []floorKind{writeFloor, ringFloor, hopFloor} {
		t.Run(kind.String(), func(t *testing.T) {
			f := newFanoutFloor(t, 50, kind)
			if kind == ringFloor && f.ring == nil {
				t.Skip("io_uring unavailable")
			}
			for range 20 {
				// round returns once every reader (the hop floor: every
				// reader's goroutine) has counted the frame.
				require.Positive(t, f.round(t, frame))
			}
		})
	}
}

package readable

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a Unix stream socket pair, as package net
// makes them (non-blocking, in the runtime's poller), closed at the end.
func pair(t *testing.T) (w, r *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func watch(t *testing.T, c *net.UnixConn) (*Socket, syscall.RawConn) {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	s, err := Watch(rc)
	require.NoError(t, err)
	t.Cleanup(s.Remove)
	return s, rc
}

// readRaw is the reader's read: once, non-blocking.
func readRaw(rc syscall.RawConn, p []byte) (n int, err error) {
	if cerr := rc.Control(func(fd uintptr) { n, err = unix.Read(int(fd), p) }); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// waitFor runs Wait with a deadline: a Wait that never returns fails the
// test instead of hanging it.
func waitFor(t *testing.T, s *Socket) bool {
	t.Helper()
	got := make(chan bool, 1)
	go func() { got <- s.Wait() }()
	select {
	case ok := <-got:
		return ok
	case <-time.After(10 * time.Second):
		s.Remove() // ends the Wait, and the goroutine
		<-got
		t.Fatal("Wait did not return")
		return false
	}
}

func TestWaitReturnsOncePerArrival(t *testing.T) {
	w, r := pair(t)
	s, rc := watch(t, r)
	buf := make([]byte, 64)

	// The first Wait returns at once: data may predate the watch.
	require.True(t, waitFor(t, s))
	_, err := readRaw(rc, buf)
	require.ErrorIs(t, err, unix.EAGAIN)

	for i := range 50 {
		msg := []byte{byte(i), 1, 2, 3}
		_, err := w.Write(msg)
		require.NoError(t, err)
		require.True(t, waitFor(t, s))
		n, err := readRaw(rc, buf)
		require.NoError(t, err)
		require.Equal(t, msg, buf[:n])
	}
	// Nothing more arrived: Wait would block.
	require.False(t, s.ready.Load(), "a ready socket with nothing sent")

	// The peer's end is an edge too; the read then sees EOF.
	require.NoError(t, w.Close())
	require.True(t, waitFor(t, s))
	n, err := readRaw(rc, buf)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestAgain(t *testing.T) {
	_, r := pair(t)
	s, _ := watch(t, r)
	require.True(t, waitFor(t, s))
	s.Again()
	require.True(t, waitFor(t, s), "Again: the next Wait returns at once")
}

// A thousand readers, each woken by its socket's edge and reading once per
// message: the empty reads a plain reader makes (one per message) are
// gone. A Wait that returned without an edge would read nothing, and be
// counted.
func TestManyReadersReadOncePerMessage(t *testing.T) {
	const socks, rounds = 1000, 20
	var ws []*net.UnixConn
	var empty, got atomic.Int64
	var started, readers sync.WaitGroup
	for range socks {
		w, r := pair(t)
		ws = append(ws, w)
		s, rc := watch(t, r)
		started.Add(1)
		readers.Add(1)
		go func() {
			defer readers.Done()
			buf := make([]byte, 64)
			first := true
			for s.Wait() {
				n, err := readRaw(rc, buf)
				if first {
					first = false
					started.Done()
				}
				switch {
				case errors.Is(err, unix.EAGAIN):
					empty.Add(1)
				case err != nil || n == 0:
					return
				default:
					got.Add(int64(n))
				}
			}
		}()
	}
	started.Wait()
	empty.Store(0) // the first reads, before anything was sent
	msg := []byte("notification")
	for range rounds {
		want := got.Load() + int64(socks*len(msg))
		for _, w := range ws {
			_, err := w.Write(msg)
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool { return got.Load() == want }, 10*time.Second, time.Millisecond)
	}
	for _, w := range ws {
		w.Close()
	}
	readers.Wait()
	t.Logf("%d empty reads for %d messages", empty.Load(), socks*rounds)
	// Plain reads would have made socks*rounds empty reads.
	require.LessOrEqual(t, empty.Load(), int64(socks*rounds/100), "empty reads")
}

// Remove ends a Wait; the last Remove ends the epoll instance and its
// goroutine (goleak checks it at the end), and a later Watch starts
// another.
func TestRemoveEndsWaitAndPoller(t *testing.T) {
	for range 3 {
		_, r := pair(t)
		rc, err := r.SyscallConn()
		require.NoError(t, err)
		s, err := Watch(rc)
		require.NoError(t, err)
		require.True(t, s.Wait())
		done := make(chan bool)
		go func() { done <- s.Wait() }()
		time.Sleep(5 * time.Millisecond)
		s.Remove()
		require.False(t, <-done)
		s.Remove() // idempotent
		mu.Lock()
		idle := cur == nil
		mu.Unlock()
		require.True(t, idle, "no socket watched, yet an epoll instance")
		require.NoError(t, goleak.Find())
	}
}

// A descriptor epoll cannot watch (a regular file) is refused with the
// kernel's reason, and leaves no instance behind.
func TestWatchRefusesAFile(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "f")
	require.NoError(t, err)
	defer f.Close()
	rc, err := f.SyscallConn()
	require.NoError(t, err)
	_, err = Watch(rc)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.ErrorIs(t, err, unix.EPERM)
	mu.Lock()
	idle := cur == nil
	mu.Unlock()
	require.True(t, idle)
}

// Sockets come and go while others receive: the race detector watches
// the slots, and no reader misses its message.
func TestWatchAndRemoveWhileReceiving(t *testing.T) {
	const workers, each = 4, 200
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 8)
			for i := range each {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if !assertNoError(t, err) {
					return
				}
				f := os.NewFile(uintptr(fds[1]), "r")
				c, err := net.FileConn(f)
				f.Close()
				if !assertNoError(t, err) {
					unix.Close(fds[0])
					return
				}
				rc, _ := c.(*net.UnixConn).SyscallConn()
				s, err := Watch(rc)
				if !assertNoError(t, err) {
					unix.Close(fds[0])
					c.Close()
					return
				}
				_, err = unix.Write(fds[0], []byte{byte(i)})
				assertNoError(t, err)
				for s.Wait() {
					if n, err := readRaw(rc, buf); err == nil && n == 1 {
						break
					}
				}
				if i%2 == 0 {
					c.Close() // closed first: the kernel drops the registration
				}
				s.Remove()
				c.Close()
				unix.Close(fds[0])
			}
		}()
	}
	wg.Wait()
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

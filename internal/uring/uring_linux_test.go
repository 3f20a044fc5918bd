package uring

import (
	"bytes"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newRing makes a ring or skips where io_uring is unavailable.
func newRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := New(entries)
	if errors.Is(err, ErrNotSupported) {
		t.Skipf("io_uring: %v", err)
	}
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}

// socketPair returns a non-blocking stream pair, closed at the end.
func socketPair(t *testing.T) (w, r int) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { syscall.Close(fds[0]); syscall.Close(fds[1]) })
	return fds[0], fds[1]
}

type result struct {
	n   int
	err error
}

// flush flushes r and returns each send's result by its user value.
func flush(t *testing.T, r *Ring) map[uint64]result {
	t.Helper()
	got := map[uint64]result{}
	require.NoError(t, r.Flush(func(user uint64, n int, err error) {
		_, dup := got[user]
		require.False(t, dup, "send %d completed twice", user)
		got[user] = result{n, err}
	}))
	return got
}

func TestSendMany(t *testing.T) {
	r := newRing(t, 64)
	const socks = 200 // more than the ring holds: several flushes, and the ring wraps
	type pair struct{ w, r int }
	pairs := make([]pair, socks)
	for i := range pairs {
		pairs[i].w, pairs[i].r = socketPair(t)
	}
	for round := range 3 {
		msgs := make([][]byte, socks)
		for i := 0; i < socks; {
			start := i
			for ; i < socks; i++ {
				msgs[i] = fmt.Appendf(nil, "round %d to %d", round, i)
				if !r.Send(pairs[i].w, msgs[i], uint64(i)) {
					break
				}
			}
			require.Greater(t, i, start, "an empty ring refused a send")
			got := flush(t, r)
			require.Len(t, got, i-start)
			for k := start; k < i; k++ {
				require.Equal(t, result{len(msgs[k]), nil}, got[uint64(k)])
			}
		}
		for i, p := range pairs {
			buf := make([]byte, 64)
			n, err := syscall.Read(p.r, buf)
			require.NoError(t, err)
			require.Equal(t, msgs[i], buf[:n])
		}
	}
}

func TestSendRingFull(t *testing.T) {
	r := newRing(t, 4)
	w, _ := socketPair(t)
	n := 0
	for r.Send(w, []byte("x"), uint64(n)) {
		n++
	}
	require.Equal(t, 4, n)
	require.Len(t, flush(t, r), 4)
	require.True(t, r.Send(w, []byte("x"), 0), "a flushed ring takes sends again")
	require.Len(t, flush(t, r), 1)
	require.False(t, r.Send(w, nil, 0), "an empty send is refused")
}

// A full socket completes at once, with what fit or EAGAIN: the ring never
// waits for the reader.
func TestSendFullSocket(t *testing.T) {
	r := newRing(t, 8)
	w, _ := socketPair(t)
	require.NoError(t, syscall.SetsockoptInt(w, syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096))
	big := bytes.Repeat([]byte("y"), 1<<20)
	require.True(t, r.Send(w, big, 1))
	first := flush(t, r)[1]
	require.NoError(t, first.err)
	require.Greater(t, first.n, 0)
	require.Less(t, first.n, len(big), "a 1 MiB send fit a 4 KiB socket")
	require.True(t, r.Send(w, big, 2))
	require.Equal(t, result{0, syscall.EAGAIN}, flush(t, r)[2])
}

func TestSendErrors(t *testing.T) {
	r := newRing(t, 8)
	w, peer := socketPair(t)
	require.NoError(t, syscall.Close(peer))            // the cleanup's second close fails quietly
	require.True(t, r.Send(w, []byte("to nobody"), 1)) // EPIPE, and no SIGPIPE kills the test
	require.True(t, r.Send(1<<20, []byte("x"), 2))     // no such descriptor
	got := flush(t, r)
	require.Equal(t, result{0, syscall.EPIPE}, got[1])
	require.Equal(t, result{0, syscall.EBADF}, got[2])
}

func TestFlushEmpty(t *testing.T) {
	r := newRing(t, 8)
	require.NoError(t, r.Flush(func(uint64, int, error) { t.Fatal("nothing was queued") }))
}

// A ring whose io_uring_enter fails (here its descriptor is gone) reports
// every queued send not sent, exactly once, refuses more, and says why.
func TestFlushBroken(t *testing.T) {
	r := newRing(t, 8)
	w, _ := socketPair(t)
	for i := range 3 {
		require.True(t, r.Send(w, []byte("x"), uint64(i)))
	}
	fd := r.fd
	require.NoError(t, syscall.Close(fd))
	r.fd = -1 // so that the cleanup's Close does not close a reused number
	got := map[uint64]result{}
	err := r.Flush(func(user uint64, n int, err error) {
		_, dup := got[user]
		require.False(t, dup)
		got[user] = result{n, err}
	})
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.ErrorIs(t, err, syscall.EBADF)
	require.Len(t, got, 3)
	for _, res := range got {
		require.ErrorIs(t, res.err, ErrNotSent)
	}
	require.False(t, r.Send(w, []byte("x"), 9), "a broken ring took a send")
	require.Error(t, r.Flush(func(uint64, int, error) { t.Fatal("nothing was queued") }))
	require.NoError(t, syscall.Munmap(r.sqeMem))
	require.NoError(t, syscall.Munmap(r.ringMem))
}

func TestClosedRingRefuses(t *testing.T) {
	r, err := New(4)
	if errors.Is(err, ErrNotSupported) {
		t.Skip(err)
	}
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, r.Close(), "a second Close")
	w, _ := socketPair(t)
	require.False(t, r.Send(w, []byte("x"), 0))
}

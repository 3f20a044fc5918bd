package userclient

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient/wire"
)

// scriptedServer serves one connection from fakeServer: every call is
// passed to answer on the server's reading goroutine, which writes what
// it likes on w (serialized with the other writes).
type scriptedServer struct {
	nc      net.Conn
	wmu     sync.Mutex
	cancels chan uint64
	done    chan struct{}
}

func newScriptedServer(t *testing.T, answer func(s *scriptedServer, f wire.Frame)) (*scriptedServer, *Client) {
	t.Helper()
	sock, conns := fakeServer(t, wire.Version, 64)
	c, err := Dial(context.Background(), sock)
	require.NoError(t, err)
	s := &scriptedServer{nc: <-conns, cancels: make(chan uint64, 64), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		dec := wire.NewDecoder(s.nc, wire.DefaultMaxFrame)
		for {
			f, err := dec.ReadFrame()
			if err != nil {
				return
			}
			f.Control, f.Data = clone(f.Control), clone(f.Data)
			if f.Type == wire.TypeCancel {
				s.cancels <- f.ID
				continue
			}
			answer(s, f)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		s.nc.Close()
		<-s.done
	})
	return s, c
}

func (s *scriptedServer) send(t *testing.T, frames ...[]byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, b := range frames {
		_, err := s.nc.Write(b)
		require.NoError(t, err)
	}
}

func reply(id uint64, data []byte) []byte {
	b, _ := wire.AppendFrame(nil, &wire.Frame{Type: wire.TypeReply, ID: id, Data: data}, wire.DefaultMaxFrame)
	return b
}

func note(h uint64, data string) []byte {
	return wire.AppendNotification(nil, h, Notification{Type: "Message", Service: 7, Data: []byte(data)})
}

// testHandle registers handle id on c as an open reply would.
func testHandle(c *Client, id uint64, buffer int) *Handle {
	h := &Handle{c: c, id: id, notes: make(chan Notification, buffer), terminated: make(chan struct{})}
	c.mu.Lock()
	c.handles[id] = h
	c.mu.Unlock()
	return h
}

// A caller reading its own answer (leading) still returns at once when
// its context ends: its wait for a frame is interrupted, not a frame cut;
// the cancel frame goes out, the late answer is dropped, and the next
// call — led again — gets its own answer.
func TestLeaderInterruptedByContext(t *testing.T) {
	calls := make(chan wire.Frame, 8)
	s, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) { calls <- f })
	h := testHandle(c, 1, 8)
	for round := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := h.Call(ctx, "block", nil)
			errc <- err
		}()
		blocked := <-calls
		time.Sleep(time.Duration(round%3) * time.Millisecond) // before and after the quiet tick
		start := time.Now()
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)
		require.Less(t, time.Since(start), time.Second)
		require.Equal(t, blocked.ID, <-s.cancels)
		s.send(t, reply(blocked.ID, []byte("late")))

		errc2 := make(chan error, 1)
		var out []byte
		go func() {
			var err error
			out, err = h.Call(context.Background(), "echo", []byte("x"))
			errc2 <- err
		}()
		f := <-calls
		s.send(t, reply(f.ID, []byte(fmt.Sprint(round))))
		require.NoError(t, <-errc2)
		require.Equal(t, fmt.Sprint(round), string(out))
	}
}

// Notifications an application wants but does not read hold the
// connection up (back-pressure, as the Notifications docs say), but a
// caller reading the socket is never stuck handing one over: its context
// still ends its call. Once the application reads, every notification
// arrives, in order, and calls are answered again.
func TestLeaderLeavesNotificationsToReader(t *testing.T) {
	const notesPerCall = 3
	var seq int
	_, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) {
		for range notesPerCall {
			seq++
			s.send(t, note(1, fmt.Sprint(seq)))
		}
		s.send(t, reply(f.ID, f.Data))
	})
	h := testHandle(c, 1, 1)
	got := h.Notifications() // wanted: back-pressure, never a drop
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := h.Call(ctx, "echo", []byte{1})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	next := 1
	read := func(n int) {
		for range n {
			select {
			case m := <-got:
				require.Equal(t, fmt.Sprint(next), string(m.Data))
				next++
			case <-time.After(10 * time.Second):
				t.Fatalf("notification %d never came", next)
			}
		}
	}
	read(notesPerCall)
	// Read as they come from now on.
	done := make(chan struct{})
	go func() {
		defer close(done)
		read(2 * notesPerCall)
	}()
	for i := range 2 {
		out, err := h.Call(context.Background(), "echo", []byte{byte(i)})
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, out)
	}
	<-done
}

// Notifications that come after the calls stop are read by the client's
// own goroutine once calls have been quiet for a tick.
func TestNotificationAfterCalls(t *testing.T) {
	s, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) { s.send(t, reply(f.ID, f.Data)) })
	h := testHandle(c, 1, 8)
	got := h.Notifications()
	for round := range 10 {
		for range 50 {
			_, err := h.Call(context.Background(), "echo", nil)
			require.NoError(t, err)
		}
		start := time.Now()
		s.send(t, note(1, fmt.Sprint(round)))
		select {
		case n := <-got:
			require.Equal(t, fmt.Sprint(round), string(n.Data))
			// A quiet tick, and some slack for a loaded machine.
			require.Less(t, time.Since(start), 2*time.Second)
		case <-time.After(10 * time.Second):
			t.Fatal("the notification after the calls never came")
		}
	}
}

// Many goroutines calling on one connection, notifications in between:
// every caller gets its own answer, whoever reads it, and the
// notifications arrive in order.
func TestConcurrentCallersShareReading(t *testing.T) {
	var mu sync.Mutex
	seq := 0
	s, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) {
		mu.Lock()
		seq++
		n := seq
		mu.Unlock()
		if n%7 == 0 {
			s.send(t, note(1, fmt.Sprint(n/7)))
		}
		if n%5 == 0 {
			// Answered later, behind others: a caller's answer is read
			// by somebody else's leading.
			go func() {
				time.Sleep(time.Millisecond)
				s.send(t, reply(f.ID, f.Data))
			}()
			return
		}
		s.send(t, reply(f.ID, f.Data))
	})
	_ = s
	h := testHandle(c, 1, 1024)
	got := h.Notifications()
	const callers, each = 8, 200
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				in := []byte(fmt.Sprint(g, "/", i))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				out, err := h.Call(ctx, "echo", in)
				cancel()
				if !assertNoError(t, err) {
					return
				}
				if string(out) != string(in) {
					t.Errorf("call %s got %s", in, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	total := callers * each / 7
	for i := 1; i <= total; i++ {
		select {
		case n := <-got:
			require.Equal(t, fmt.Sprint(i), string(n.Data))
		case <-time.After(10 * time.Second):
			t.Fatalf("notification %d never came", i)
		}
	}
}

func assertNoError(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// Closing the client while a caller reads for it, or while the server
// garbles the stream under a leader, ends every call with the
// connection's error: nobody waits on a socket nobody reads.
func TestLeaderConnectionEnds(t *testing.T) {
	t.Run("close", func(t *testing.T) {
		calls := make(chan wire.Frame, 1)
		_, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) { calls <- f })
		h := testHandle(c, 1, 1)
		errc := make(chan error, 1)
		go func() {
			_, err := h.Call(context.Background(), "block", nil)
			errc <- err
		}()
		<-calls
		require.NoError(t, c.Close())
		require.ErrorIs(t, <-errc, ErrClosed)
		_, err := h.Call(context.Background(), "echo", nil)
		require.ErrorIs(t, err, ErrClosed)
	})
	t.Run("garbage", func(t *testing.T) {
		_, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) {
			s.send(t, []byte{0, 0, 0, 3, 0xff, 0xff, 0xff})
		})
		h := testHandle(c, 1, 1)
		_, err := h.Call(context.Background(), "echo", nil)
		require.ErrorIs(t, err, ErrProtocol)
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end")
		}
		require.ErrorIs(t, c.Err(), ErrProtocol)
	})
}

// Notifications reach the handle they name, however they alternate (the
// client remembers the last handle it found, for the one-handle case);
// one for a handle that was closed, or never opened, is dropped.
func TestNotificationsFollowTheirHandle(t *testing.T) {
	s, c := newScriptedServer(t, func(s *scriptedServer, f wire.Frame) {
		if f.Type == wire.TypeClose {
			s.send(t, reply(f.ID, nil))
		}
	})
	h1, h2 := testHandle(c, 1, 16), testHandle(c, 2, 16)
	s.send(t, note(1, "a"), note(2, "b"), note(2, "c"), note(3, "lost"), note(1, "d"), note(2, "e"))
	for _, w := range []struct {
		h    *Handle
		data string
	}{{h1, "a"}, {h1, "d"}, {h2, "b"}, {h2, "c"}, {h2, "e"}} {
		select {
		case n := <-w.h.Notifications():
			require.Equal(t, w.data, string(n.Data))
		case <-time.After(10 * time.Second):
			t.Fatalf("handle %d: no %q", w.h.id, w.data)
		}
	}
	s.send(t, note(1, "g")) // the last one found: handle 1
	select {
	case n := <-h1.Notifications():
		require.Equal(t, "g", string(n.Data))
	case <-time.After(10 * time.Second):
		t.Fatal("handle 1: no g")
	}
	require.NoError(t, h1.Close())
	s.send(t, note(1, "stale"), note(2, "f"))
	select {
	case n := <-h2.Notifications():
		require.Equal(t, "f", string(n.Data))
	case <-time.After(10 * time.Second):
		t.Fatal("handle 2: no f")
	}
	for n := range h1.Notifications() {
		t.Fatalf("closed handle got %q", n.Data)
	}
}

package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// One client opens the shared service 2,000 times on one connection and
// disconnects: every close is a ServiceWasClosed for each other holder, a
// burst past the queue limit. The bystanders coalesce it and stay
// connected, in every one of 20 trials, and the burst costs each of them
// a few frames, not 2,000. The default handle limit would refuse the
// attacker first; it is raised here to test the fan-out itself.
func TestFanOutBurstNeverDropsBystanders(t *testing.T) {
	const handles, bystanders = 2000, 4 // handles divisible by 16
	trials := 20
	if raceEnabled {
		trials = 3
	}
	ts := newTestServer(t, Config{Limits: Limits{MaxHandles: handles, MaxHandlesPerUID: handles + bystanders}})
	ctx := context.Background()
	type bystander struct {
		h      *userclient.Handle
		closed chan int // ServiceWasClosed frames and the closes they stand for
	}
	var bs []bystander
	for range bystanders {
		h, err := ts.dial(t).Open(ctx, userclient.Match{Class: "TestDevice"})
		require.NoError(t, err)
		b := bystander{h: h, closed: make(chan int, 1<<16)}
		go func() {
			for n := range h.Notifications() {
				if n.Type == userclient.ServiceWasClosed {
					closes := 1
					fmt.Sscanf(n.Detail, "%d clients closed", &closes)
					b.closed <- closes
				}
			}
		}()
		bs = append(bs, b)
	}
	dropped, frames := 0, 0
	for trial := range trials {
		attacker := ts.dial(t)
		errs := make(chan error, 16)
		for range 16 {
			go func() {
				for range handles / 16 {
					if _, err := attacker.Open(ctx, userclient.Match{Class: "TestDevice"}); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 16 {
			require.NoError(t, <-errs)
		}
		require.NoError(t, attacker.Close()) // the burst: 2,000 closes
		for i, b := range bs {
			// Every close is accounted for, in few frames.
			got := 0
			for got < handles {
				select {
				case n := <-b.closed:
					got += n
					frames++
				case <-time.After(20 * time.Second):
					t.Fatalf("trial %d bystander %d: heard of %d of %d closes", trial, i, got, handles)
				}
			}
			require.Equal(t, handles, got)
			if _, err := b.h.Call(ctx, "echo", []byte("ok")); err != nil {
				dropped++
			}
		}
	}
	t.Logf("%d trials × %d bystanders: %d dropped; %d closes reached them in %d frames (the server merged %d notifications, the attacker's own included)",
		trials, bystanders, dropped, trials*bystanders*handles, frames, ts.Stats().Coalesced)
	require.Zero(t, dropped)
	for _, b := range bs {
		require.NoError(t, b.h.Close())
	}
}

// A client that stops reading is dropped, and the reason is the next thing
// it reads when it reads again, ahead of what was still queued.
func TestDroppedNonReaderGetsTheReason(t *testing.T) {
	ts := newTestServer(t, Config{QueueFrames: 64, QueueBytes: 256 << 10})
	nc := openRaw(t, ts)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)
	payload := bytes.Repeat([]byte("n"), 8<<10)
	for ts.Stats().Sessions == 1 {
		ts.dev.message(payload)
	}
	// It reads again (within the overflow grace): what was in the socket
	// buffer, then the reason.
	expectFatal(t, nc, wire.CodeOverflow, "queued")
	d := <-ts.disc
	require.ErrorIs(t, d.reason, userclient.ErrOverflow)
	require.True(t, strings.Contains(d.reason.Error(), "queued"), "%v", d.reason)
}

// Frames larger than the socket buffer, queued while nobody writes, are
// begun by the goroutine that queued them and finished by the writer:
// a peer that reads late still gets every frame whole and in order, then
// the overflow reason, framed (the rest of a frame a direct write began
// stays ahead of it).
func TestDirectWritesKeepFraming(t *testing.T) {
	ts := newTestServer(t, Config{QueueBytes: 4 << 20})
	nc := openRaw(t, ts)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)
	// Past the socket buffer (about 200 KiB) at once, and in sizes that
	// end anywhere in a page.
	sizes := []int{300 << 10, 1, 70001, 250 << 10, 5, 123457}
	sent := 0
	for i := 0; ts.Stats().Sessions == 1; i++ {
		ts.dev.message(bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)]))
		sent++
		if sent == 2*len(sizes) {
			// Read what the first rounds queued, then overflow.
			break
		}
	}
	d := wire.NewDecoder(nc, 0)
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	next := 0
	for next < sent {
		f, err := d.ReadFrame()
		require.NoError(t, err)
		if f.Type != wire.TypeNotification {
			continue // the welcome and the open reply
		}
		require.Len(t, f.Data, sizes[next%len(sizes)], "notification %d", next)
		require.Equal(t, bytes.Repeat([]byte{byte('a' + next%26)}, len(f.Data)), f.Data, "notification %d", next)
		next++
	}
	// Now stop reading until the queue overflows: the reason still
	// arrives framed, after whatever was begun.
	for ts.Stats().Sessions == 1 {
		ts.dev.message(bytes.Repeat([]byte("z"), 300<<10))
	}
	expectFatal(t, nc, wire.CodeOverflow, "queued")
}

// scratchPayload is notification i's data: its number, then bytes that
// say which it is, small enough for the scratch path (5 bytes to about
// 1 KiB, so frames end anywhere in a page).
func scratchPayload(i int) []byte {
	b := fmt.Appendf(nil, "%d:", i)
	return append(b, bytes.Repeat([]byte{byte('a' + i%26)}, (i*37)%(scratchMax-32))...)
}

// Small notifications are encoded into the connection's scratch buffer and
// written directly. With a peer that reads late the socket stops taking
// them: what a direct write could not send is copied out of the buffer
// (the next notification reuses it) into the queue, later ones queue
// behind it, and replies to the peer's pings, served by other goroutines,
// are written directly or queued among them. The peer then reads every
// frame whole, every notification once, in order and with its own bytes,
// and every ping's reply.
func TestScratchWritesKeepOrderAndFraming(t *testing.T) {
	ts := newTestServer(t, Config{QueueFrames: 1 << 14, QueueBytes: 64 << 20})
	nc := openRaw(t, ts)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)
	tails := ts.tails.Load()

	// Notifications alone first: the socket buffer (about 200 KiB) cannot
	// hold 1,000 of half a KiB, and the direct write that finds it full
	// leaves its frame to the writer.
	const notes, pings = 4000, 300
	const alone = 1000
	for i := range alone {
		ts.dev.message(scratchPayload(i))
	}
	require.Eventually(t, func() bool { return ts.tails.Load() > tails }, 20*time.Second, time.Millisecond)
	// Then the rest, while the peer's pings are answered by other
	// goroutines.
	var pingFrames [][]byte
	for i := range pings {
		pingFrames = append(pingFrames, rawFrame(t, wire.TypePing, uint64(100+i), "", nil))
	}
	pinged := make(chan error, 1)
	go func() {
		for _, f := range pingFrames {
			if _, err := nc.Write(f); err != nil {
				pinged <- err
				return
			}
		}
		pinged <- nil
	}()
	for i := alone; i < notes; i++ {
		ts.dev.message(scratchPayload(i))
	}
	require.NoError(t, <-pinged)

	d := wire.NewDecoder(nc, 0)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	next := 0
	replies := map[uint64]bool{}
	for next < notes || len(replies) < pings {
		f, err := d.ReadFrame()
		require.NoError(t, err, "after %d notifications and %d ping replies", next, len(replies))
		switch {
		case f.Type == wire.TypeNotification:
			require.Equal(t, scratchPayload(next), f.Data, "notification %d", next)
			next++
		case f.Type == wire.TypeReply && f.ID >= 100:
			require.False(t, replies[f.ID], "ping %d answered twice", f.ID)
			replies[f.ID] = true
		case f.Type == wire.TypeWelcome || f.Type == wire.TypeReply && f.ID == 2:
		default:
			t.Fatalf("unexpected %v frame %d", f.Type, f.ID)
		}
	}
	require.Equal(t, 1, ts.Stats().Sessions, "the late reader is still connected")
}

// A fan-out of small notifications (the scratch path) to a peer that never
// reads and to one that does: the non-reader is dropped for overflow and
// told why, while the reader — whose handler paces the driver here — gets
// every notification, in order, and stays connected.
func TestScratchFanOutDropsOnlyTheNonReader(t *testing.T) {
	ts := newTestServer(t, Config{QueueFrames: 64, QueueBytes: 256 << 10})
	nc := openRaw(t, ts)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)

	got := make(chan []byte, 1)
	ctx := context.Background()
	reader, err := userclient.Dial(ctx, ts.sock, userclient.WithNotificationHandler(func(_ *userclient.Handle, n userclient.Notification) {
		if n.Type == driverMsgType {
			got <- n.Data
		}
	}))
	require.NoError(t, err)
	t.Cleanup(func() { reader.Close() })
	h, err := reader.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)

	sent := 0
	for ts.Stats().Sessions == 2 {
		ts.dev.message(scratchPayload(sent))
		select {
		case b := <-got:
			require.Equal(t, scratchPayload(sent), b, "notification %d", sent)
		case <-time.After(20 * time.Second):
			t.Fatalf("the reader did not get notification %d", sent)
		}
		sent++
	}
	expectFatal(t, nc, wire.CodeOverflow, "queued")
	d := <-ts.disc
	require.ErrorIs(t, d.reason, userclient.ErrOverflow)
	t.Logf("the non-reader was dropped after %d notifications", sent)
	out, err := h.Call(ctx, "echo", []byte("still here"))
	require.NoError(t, err)
	require.Equal(t, "still here", string(out))
}

// A direct write goes to the socket's descriptor number, past net's
// poller: the writer, the only one to close the socket, must not close it
// while a direct write holds the write side, or the number could be
// reused under the write. Here the connection fails while a direct write
// holds it: the writer ends only after the write gave the side back, and
// the descriptor still takes the frame meanwhile.
func TestWriterClosesOnlyAfterDirectWrite(t *testing.T) {
	ts := newTestServer(t, Config{})
	nc := openRaw(t, ts)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, 10*time.Second, time.Millisecond)
	c := ts.onlyConn(t)
	require.GreaterOrEqual(t, c.wfd, 0)

	require.Eventually(t, c.claimDirect, 5*time.Second, time.Millisecond, "the welcome and the open reply leave the queue")
	c.fail(errors.New("test: failed under a direct write"), "")
	ended := make(chan struct{})
	go func() { c.writerWG.Wait(); close(ended) }()
	require.Never(t, isClosed(ended), 200*time.Millisecond, 5*time.Millisecond, "the writer closed the socket under a direct write")
	frame := wire.AppendNotification(nil, 1, userclient.Notification{Type: "late", Service: 1})
	c.writeDirect(frame, false) // gives the side back
	waitClosed(t, ended, "the writer did not end once the direct write gave the side back")
	// The peer read what the descriptor took before the close.
	d := wire.NewDecoder(nc, 0)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := d.ReadFrame()
		require.NoError(t, err, "the late frame never came")
		if f.Type == wire.TypeNotification {
			m, err := wire.DecodeNotificationMsg(f.Control, "")
			require.NoError(t, err)
			require.Equal(t, "late", m.Type)
			break
		}
	}
}

// stopWrites, the writer's last act before it closes the socket, waits
// for a direct write that claimed the write side between the writer's
// last batch and its return, and leaves the side claimed for good. (Run
// here on its own, the connection's writer gone, so that nobody else
// takes the wake-up.)
func TestStopWritesWaitsForDirectWrite(t *testing.T) {
	ts := newTestServer(t, Config{})
	nc := rawDial(t, ts.sock)
	_, err := nc.Write(rawFrame(t, wire.TypeHello, 1, helloJSON, nil))
	require.NoError(t, err)
	c := ts.onlyConn(t)
	c.fail(errors.New("test: the writer goes first"), "")
	waitWriter(t, c)
	require.False(t, c.claimDirect(), "a direct write after the writer ended")

	// The moment after the writer's last batch: the side free, a direct
	// write taking it.
	c.qmu.Lock()
	c.writing, c.directOn = true, true
	c.qmu.Unlock()
	stopped := make(chan struct{})
	go func() { c.stopWrites(); close(stopped) }()
	require.Never(t, isClosed(stopped), 100*time.Millisecond, 5*time.Millisecond, "stopWrites returned under a direct write")
	c.endDirect()
	waitClosed(t, stopped, "stopWrites did not return once the direct write ended")
	c.qmu.Lock()
	defer c.qmu.Unlock()
	require.True(t, c.writing, "the write side stays taken after stopWrites")
}

// onlyConn is the server's one connection, once it is served.
func (ts *testServer) onlyConn(t *testing.T) *conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.mu.Lock()
		var c *conn
		for k := range ts.conns {
			c = k
		}
		n := len(ts.conns)
		ts.mu.Unlock()
		if n == 1 {
			return c
		}
		require.True(t, time.Now().Before(deadline), "%d connections, want 1", n)
		time.Sleep(time.Millisecond)
	}
}

// waitWriter waits for c's writer to end.
func waitWriter(t *testing.T, c *conn) {
	t.Helper()
	done := make(chan struct{})
	go func() { c.writerWG.Wait(); close(done) }()
	waitClosed(t, done, "the connection's writer did not end")
}

// isClosed is a condition for require.Never and Eventually: ch is closed.
func isClosed(ch <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
}

// waitClosed fails t with msg unless ch closes within 5 s.
func waitClosed(t *testing.T, ch <-chan struct{}, msg string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal(msg)
	}
}

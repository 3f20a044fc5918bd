package server

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/internal/uring"
	"github.com/drvkit/drvkit/userclient/wire"
)

// batchModes are the two ways a fan-out's notifications leave: through
// io_uring, or a write(2) each (Config.NoIOURing, and where io_uring is
// unavailable).
var batchModes = []struct {
	name string
	cfg  Config
}{
	{"io_uring", Config{}},
	{"write", Config{NoIOURing: true}},
}

// requireRingPath checks which way ts's fan-outs went; it skips the
// io_uring case where the kernel or a seccomp filter refuses io_uring.
func requireRingPath(t *testing.T, ts *testServer, mode string) {
	t.Helper()
	ts.rings.mu.Lock()
	made, err := ts.rings.made, ts.rings.err
	ts.rings.mu.Unlock()
	if mode == "write" {
		require.Zero(t, made, "a ring was made with io_uring turned off")
		require.ErrorIs(t, err, errRingsOff)
		return
	}
	if errors.Is(err, uring.ErrNotSupported) {
		t.Skipf("io_uring unavailable here: %v", err)
	}
	require.NoError(t, err)
	require.Positive(t, made, "no fan-out went through a ring")
}

// A fan-out to several peers that read late: their sockets fill in the
// middle of a batch, so sends in one flush write part of a frame or
// nothing (EAGAIN), and the rest goes to each connection's queue. Every
// peer then reads every notification whole, once and in order — through
// io_uring and through write(2).
func TestBatchedFanOutKeepsOrderAndFraming(t *testing.T) {
	for _, mode := range batchModes {
		t.Run(mode.name, func(t *testing.T) {
			cfg := mode.cfg
			cfg.QueueFrames, cfg.QueueBytes = 1<<14, 64<<20
			ts := newTestServer(t, cfg)
			const peers, notes = 5, 2000
			ncs := openPeers(t, ts, peers)
			tails := ts.tails.Load()
			for i := range notes {
				ts.dev.message(scratchPayload(i))
			}
			require.Greater(t, ts.tails.Load(), tails, "no socket filled up mid-frame")
			readEach(t, ncs, notes, 30*time.Second)()
			require.Equal(t, peers, ts.Stats().Sessions, "a late reader was dropped")
			requireRingPath(t, ts, mode.name)
		})
	}
}

// Peers that come and go while fan-outs run: a connection that fails with
// its write in a batch closes only after the batch's flush gave the write
// side back, the fan-out never waits for it, the peers that stay get every
// notification in order, and nothing is left behind (newTestServer's leak
// check).
func TestBatchedFanOutWithPeersDying(t *testing.T) {
	for _, mode := range batchModes {
		t.Run(mode.name, func(t *testing.T) {
			cfg := mode.cfg
			cfg.QueueFrames, cfg.QueueBytes = 1<<14, 64<<20 // the stayers may fall behind
			ts := newTestServer(t, cfg)
			const stay, churn, notes = 4, 40, 3000
			// The stayers read as the notifications come.
			wait := readEach(t, openPeers(t, ts, stay), notes, 60*time.Second)
			// Others connect, open, and vanish at random moments.
			stop := make(chan struct{})
			var churners sync.WaitGroup
			for range 2 {
				churners.Add(1)
				go func() {
					defer churners.Done()
					for k := 0; ; k++ {
						select {
						case <-stop:
							return
						default:
						}
						nc := openRaw(t, ts)
						time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
						nc.Close()
						if k == churn {
							return
						}
					}
				}()
			}
			for i := range notes {
				ts.dev.message(scratchPayload(i))
			}
			close(stop)
			churners.Wait()
			wait()
			require.Eventually(t, func() bool { return ts.Stats().Sessions == stay }, 10*time.Second, time.Millisecond)
			requireRingPath(t, ts, mode.name)
		})
	}
}

// The ring pool makes rings as fan-outs need them, up to ringsMax, and
// none once told why not; rings given back after the server closed are
// closed.
func TestRingPool(t *testing.T) {
	p := ringPool{log: slog.New(slog.DiscardHandler)}
	var got []*uring.Ring
	for range ringsMax {
		r := p.get()
		if r == nil {
			require.ErrorIs(t, p.err, uring.ErrNotSupported)
			t.Skipf("io_uring unavailable here: %v", p.err)
		}
		got = append(got, r)
	}
	require.Nil(t, p.get(), "more rings than ringsMax")
	p.put(got[0])
	require.Same(t, got[0], p.get(), "a ring given back is reused")
	p.put(got[0])
	p.close()
	require.Equal(t, ringsMax-1, p.made, "the free ring was closed")
	require.Nil(t, p.get(), "a closed pool made a ring")
	for _, r := range got[1:] {
		p.put(r) // closed on the way back
	}
	require.Zero(t, p.made)

	off := ringPool{err: errRingsOff}
	require.Nil(t, off.get())
	require.Zero(t, off.made)
}

// isDriverNote reports whether f is a notification the test device sent.
func isDriverNote(f wire.Frame) bool {
	return f.Type == wire.TypeNotification && bytes.Contains(f.Control, []byte(`"type":"`+string(driverMsgType)+`"`))
}

// readNotes reads from peer p's connection until it has the test
// device's first n notifications, checking that each is whole and in
// order (scratchPayload).
func readNotes(nc net.Conn, p, n int, timeout time.Duration) error {
	d := wire.NewDecoder(nc, 0)
	nc.SetReadDeadline(time.Now().Add(timeout))
	for next := 0; next < n; {
		f, err := d.ReadFrame()
		if err != nil {
			return fmt.Errorf("peer %d after %d notifications: %w", p, next, err)
		}
		if !isDriverNote(f) {
			continue // the welcome, the open reply, others' closes
		}
		if string(f.Data) != string(scratchPayload(next)) {
			return fmt.Errorf("peer %d: notification %d is %.20q", p, next, f.Data)
		}
		next++
	}
	return nil
}

// openPeers opens n raw peers on ts (openRaw) and waits until the server
// serves them all.
func openPeers(t *testing.T, ts *testServer, n int) []net.Conn {
	t.Helper()
	ncs := make([]net.Conn, n)
	for i := range ncs {
		ncs[i] = openRaw(t, ts)
	}
	require.Eventually(t, func() bool { return ts.Stats().Sessions == n }, 10*time.Second, time.Millisecond)
	return ncs
}

// readEach has every peer read the first n notifications (readNotes) in
// a goroutine of its own; wait fails the test unless all got them.
func readEach(t *testing.T, ncs []net.Conn, n int, timeout time.Duration) (wait func()) {
	errs := make(chan error, len(ncs))
	for p, nc := range ncs {
		go func() { errs <- readNotes(nc, p, n, timeout) }()
	}
	return func() {
		t.Helper()
		for range ncs {
			require.NoError(t, <-errs)
		}
	}
}

// A ring that breaks is not used again: the fan-out that finds its ring
// refusing sends writes every notification with write(2), and the
// server's later fan-outs do so too, without trying another ring.
func TestBrokenRingFallsBackToWrite(t *testing.T) {
	ts := newTestServer(t, Config{})
	const peers = 6
	wait := readEach(t, openPeers(t, ts, peers), 3, 30*time.Second)
	ts.dev.message(scratchPayload(0)) // makes the ring
	requireRingPath(t, ts, "io_uring")
	ts.rings.mu.Lock()
	require.Len(t, ts.rings.free, 1)
	ts.rings.free[0].Break(errors.New("test: broken"))
	ts.rings.mu.Unlock()
	before := ts.Stats()
	ts.dev.message(scratchPayload(1)) // the broken ring refuses: write(2)
	ts.dev.message(scratchPayload(2)) // no ring any more
	wait()
	after := ts.Stats()
	require.Equal(t, before.FanoutRing, after.FanoutRing, "a broken ring sent")
	// Every notification arrived (wait). Most go out with write(2); on a
	// loaded machine one may find its connection's write side busy and go
	// through the connection's writer, which neither counter counts.
	wrote := after.FanoutWrite - before.FanoutWrite
	require.Positive(t, wrote, "no fan-out fell back to write(2)")
	require.LessOrEqual(t, wrote, int64(2*peers))
	ts.rings.mu.Lock()
	defer ts.rings.mu.Unlock()
	require.Zero(t, ts.rings.made, "the broken ring was kept")
	require.EqualError(t, ts.rings.err, "test: broken")
}

// One application holds the device open 100 times on one connection, as
// a multipath tool holds a LUN through each path: within one fan-out the
// first of its user clients takes the connection's write side for the
// batch, and the other 99 queue behind it. Every handle gets every
// notification, in order, through io_uring and through write(2). (The
// 99 are written by the connection's writer; a fan-out that finds it still
// writing queues the connection's frames too, so the first fan-outs are
// paced for the io_uring case to be seen on a loaded machine.)
func TestBatchedFanOutManyHandlesOneConnection(t *testing.T) {
	for _, mode := range batchModes {
		t.Run(mode.name, func(t *testing.T) {
			cfg := mode.cfg
			cfg.QueueFrames, cfg.QueueBytes = 1<<16, 64<<20
			ts := newTestServer(t, cfg)
			// The first paced fan-outs wait for the handles to have theirs;
			// the rest go as fast as the server takes them.
			const handles, notes, paced = 100, 300, 50
			nc := rawDial(t, ts.sock)
			req := rawFrame(t, wire.TypeHello, 1, helloJSON, nil)
			for i := range handles {
				req = append(req, rawFrame(t, wire.TypeOpen, uint64(2+i), `{"match":{"class":"TestDevice"}}`, nil)...)
			}
			_, err := nc.Write(req)
			require.NoError(t, err)
			// Every open answered before the fan-outs: a connection whose
			// writer still has replies to write takes no direct write,
			// and so no part in a batch.
			d := wire.NewDecoder(nc, 0)
			nc.SetReadDeadline(time.Now().Add(30 * time.Second))
			for replies := 0; replies < handles; {
				f, err := d.ReadFrame()
				require.NoError(t, err, "after %d open replies", replies)
				if f.Type == wire.TypeReply {
					replies++
				}
			}
			other := openRaw(t, ts) // a second connection: the batch has two
			require.Eventually(t, func() bool { return ts.Stats().Sessions == handles+1 }, 10*time.Second, time.Millisecond)
			done := make(chan error, 1)
			go func() { done <- readNotes(other, 0, notes, 30*time.Second) }()
			// The handles' notifications are read as they come, so that
			// the connection's socket does not fill and queue them all.
			next := map[uint64]int{} // by handle: the next notification it must get
			read := make(chan error, 1)
			var progress atomic.Int64
			go func() {
				for got := 0; got < handles*notes; {
					f, err := d.ReadFrame()
					if err != nil {
						read <- fmt.Errorf("after %d notifications: %w", got, err)
						return
					}
					if !isDriverNote(f) {
						continue
					}
					m, err := wire.DecodeNotificationMsg(f.Control, "")
					if err != nil {
						read <- err
						return
					}
					if want := string(scratchPayload(next[m.Handle])); want != string(f.Data) {
						read <- fmt.Errorf("handle %d: notification %d is %.20q", m.Handle, next[m.Handle], f.Data)
						return
					}
					next[m.Handle]++
					got++
					progress.Store(int64(got))
				}
				read <- nil
			}()
			for i := range notes {
				ts.dev.message(scratchPayload(i))
				if i < paced {
					// Until the handles have it: the connection's writer,
					// which wrote the 99 behind the first, is then idle,
					// and the next fan-out's first handle writes directly,
					// in the batch with the other connection.
					require.Eventually(t, func() bool { return progress.Load() == int64(handles*(i+1)) }, 30*time.Second, 50*time.Microsecond)
				}
			}
			require.NoError(t, <-read)
			require.Len(t, next, handles)
			require.NoError(t, <-done)
			requireRingPath(t, ts, mode.name)
		})
	}
}

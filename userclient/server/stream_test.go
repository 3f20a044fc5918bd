package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// bigResult is an admin result whose JSON is about n bytes.
type bigResult struct {
	Items []string `json:"items"`
}

func makeBig(n int) bigResult {
	var r bigResult
	for i := 0; n > 0; i++ {
		s := strings.Repeat(string(rune('a'+i%26)), 1000)
		r.Items = append(r.Items, s)
		n -= len(s) + 3
	}
	return r
}

// bigAdmin answers every admin call with res and data, counting calls.
func bigAdmin(res any, data []byte, calls *atomic.Int32) AdminFunc {
	return func(ctx context.Context, _ userclient.Cred, op string, _ json.RawMessage, _ []byte) (any, []byte, error) {
		if calls != nil {
			calls.Add(1)
		}
		if op == "small" {
			return map[string]int{"n": 1}, []byte("ok"), nil
		}
		return res, data, nil
	}
}

// A reply many times the maximum frame arrives whole and intact, over the
// socket and in process, control and data both.
func TestStreamedReply(t *testing.T) {
	res := makeBig(5 << 20)
	data := bytes.Repeat([]byte{0, 1, 2, 3, 4, 5, 6}, 3<<20/7)
	ts := newTestServer(t, Config{Admin: bigAdmin(res, data, nil)})
	want, err := json.Marshal(res)
	require.NoError(t, err)
	for _, mode := range clientModes {
		t.Run(mode, func(t *testing.T) {
			c := ts.client(t, mode)
			require.Equal(t, wire.Version, c.Version())
			ctl, out, err := c.Admin(context.Background(), "big", nil, nil)
			require.NoError(t, err)
			require.JSONEq(t, string(want), string(ctl))
			require.Equal(t, data, out)
			ctl, out, err = c.Admin(context.Background(), "small", nil, nil)
			require.NoError(t, err)
			require.JSONEq(t, `{"n":1}`, string(ctl))
			require.Equal(t, "ok", string(out))
		})
	}
}

// Version 1 and 2 peers never see a part frame: small replies as before,
// a reply too large for a frame is the failed error it always was.
func TestStreamedReplyOldVersions(t *testing.T) {
	ts := newTestServer(t, Config{Admin: bigAdmin(makeBig(2<<20), nil, nil)})
	for _, v := range []string{"[2,1]", "[1]"} {
		t.Run(v, func(t *testing.T) {
			r := rawHandshake(t, ts, v)
			r.send(t, rawFrame(t, wire.TypeAdmin, 2, `{"op":"small"}`, nil))
			f := r.next(t)
			require.Equal(t, wire.TypeReply, f.Type)
			require.JSONEq(t, `{"n":1}`, string(f.Control))
			r.send(t, rawFrame(t, wire.TypeAdmin, 3, `{"op":"big"}`, nil))
			f = r.next(t)
			require.Equal(t, wire.TypeError, f.Type, "no part frame on a version %s connection", v)
			require.Contains(t, string(f.Control), "exceeds the maximum")
			r.send(t, rawFrame(t, wire.TypePing, 4, ``, []byte("x")))
			require.Equal(t, wire.TypeReply, r.next(t).Type)
		})
	}
}

// A client that reads a streamed reply slowly is slowed down, not dropped
// for overflow, and does not hold up other clients; the queue never holds
// more than its bound.
func TestStreamedReplySlowReader(t *testing.T) {
	res := makeBig(4 << 20)
	ts := newTestServer(t, Config{Admin: bigAdmin(res, nil, nil), MaxFrame: 64 << 10, QueueBytes: 256 << 10, QueueFrames: 16})
	r := rawHandshake(t, ts, "[3,2,1]")
	r.send(t, rawFrame(t, wire.TypeAdmin, 2, `{"op":"big"}`, nil))

	other := ts.dial(t)
	var got []byte
	parts := 0
	for {
		f := r.next(t)
		got = append(got, f.Control...)
		if f.Type == wire.TypeReply {
			break
		}
		require.Equal(t, wire.TypePart, f.Type)
		require.LessOrEqual(t, f.Size(), 64<<10)
		parts++
		if parts%8 == 0 {
			// Slow: meanwhile another client is served at once.
			start := time.Now()
			require.NoError(t, other.Ping(context.Background()))
			require.Less(t, time.Since(start), 5*time.Second)
			time.Sleep(5 * time.Millisecond)
		}
	}
	var back bigResult
	require.NoError(t, json.Unmarshal(got, &back))
	require.Equal(t, res, back)
	require.Greater(t, parts, 60)
	r.send(t, rawFrame(t, wire.TypePing, 3, ``, nil))
	require.Equal(t, wire.TypeReply, r.next(t).Type, "the slow connection is still up")
}

// A cancel in the middle of a stream stops the producer: the request ends
// with one cancelled error, long before the whole reply was sent. (8 MiB:
// the value is encoded whole before its first part leaves, which takes
// seconds under the race detector on a loaded machine.)
func TestStreamedReplyCancel(t *testing.T) {
	ts := newTestServer(t, Config{Admin: bigAdmin(makeBig(8<<20), nil, nil), MaxFrame: 64 << 10, QueueBytes: 256 << 10})
	r := rawHandshake(t, ts, "[3]")
	r.send(t, rawFrame(t, wire.TypeAdmin, 2, `{"op":"big"}`, nil))
	require.Equal(t, wire.TypePart, r.next(t).Type)
	// Let the producer fill its share of the queue and wait on it.
	time.Sleep(50 * time.Millisecond)
	r.send(t, cancelFrame(t, 2))
	parts := 1
	for {
		f := r.next(t)
		if f.Type == wire.TypeError {
			require.Contains(t, string(f.Control), `"cancelled"`)
			break
		}
		require.Equal(t, wire.TypePart, f.Type)
		parts++
	}
	// 8 MiB is 128 parts; the queue share (4 parts) plus the socket
	// buffers hold far fewer.
	require.Less(t, parts, 100, "the producer stopped at the cancel")
	require.Eventually(t, func() bool { return ts.inflight() == 0 }, cancelWait, time.Millisecond)
	r.send(t, rawFrame(t, wire.TypePing, 3, ``, nil))
	require.Equal(t, wire.TypeReply, r.next(t).Type)
}

// The client's own limit on a whole reply: a clear error, the request is
// cancelled on the server, the connection stays usable.
func TestStreamedReplyTooLarge(t *testing.T) {
	ts := newTestServer(t, Config{Admin: bigAdmin(makeBig(8<<20), nil, nil)})
	c, err := userclient.Dial(context.Background(), ts.sock, userclient.WithMaxReply(2<<20))
	require.NoError(t, err)
	defer c.Close()
	_, _, err = c.Admin(context.Background(), "big", nil, nil)
	require.ErrorIs(t, err, userclient.ErrReplyTooLarge)
	require.Contains(t, err.Error(), "admin big: reply too large: more than 2097152 bytes")
	ctl, _, err := c.Admin(context.Background(), "small", nil, nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"n":1}`, string(ctl))
	require.NoError(t, c.Ping(context.Background()))
}

// streamed is a StreamedResult writing n items of 1000 bytes; it stops
// when a Write fails, and reports how many items it wrote.
type streamed struct {
	n     int
	wrote atomic.Int32
	err   chan error
}

func (s *streamed) WriteJSON(w io.Writer) error {
	item := `"` + strings.Repeat("x", 998) + `"`
	if _, err := io.WriteString(w, "["); err != nil {
		return s.done(err)
	}
	for i := range s.n {
		sep := ","
		if i == 0 {
			sep = ""
		}
		if _, err := io.WriteString(w, sep+item); err != nil {
			return s.done(err)
		}
		s.wrote.Add(1)
	}
	_, err := io.WriteString(w, "]")
	return s.done(err)
}

func (s *streamed) done(err error) error {
	if s.err != nil {
		s.err <- err
	}
	return err
}

// A StreamedResult goes out as it is written on version 3, whole for
// version 2 peers (within a frame), and a cancel makes its Write fail.
func TestStreamedResult(t *testing.T) {
	var res atomic.Pointer[streamed]
	ts := newTestServer(t, Config{MaxFrame: 64 << 10, QueueBytes: 256 << 10,
		Admin: func(ctx context.Context, _ userclient.Cred, op string, _ json.RawMessage, _ []byte) (any, []byte, error) {
			return res.Load(), []byte("tail"), nil
		}})
	want := func(n int) []string {
		v := make([]string, n)
		for i := range v {
			v[i] = strings.Repeat("x", 998)
		}
		return v
	}
	t.Run("v3", func(t *testing.T) {
		res.Store(&streamed{n: 3000})
		c, err := userclient.Dial(context.Background(), ts.sock, userclient.WithMaxFrame(64<<10))
		require.NoError(t, err)
		defer c.Close()
		ctl, data, err := c.Admin(context.Background(), "x", nil, nil)
		require.NoError(t, err)
		var got []string
		require.NoError(t, json.Unmarshal(ctl, &got))
		require.Equal(t, want(3000), got)
		require.Equal(t, "tail", string(data))
	})
	t.Run("v2", func(t *testing.T) {
		r := rawHandshake(t, ts, "[2,1]")
		res.Store(&streamed{n: 10})
		r.send(t, rawFrame(t, wire.TypeAdmin, 2, `{"op":"small"}`, nil))
		f := r.next(t)
		require.Equal(t, wire.TypeReply, f.Type)
		var got []string
		require.NoError(t, json.Unmarshal(f.Control, &got))
		require.Equal(t, want(10), got)
		res.Store(&streamed{n: 100})
		r.send(t, rawFrame(t, wire.TypeAdmin, 3, `{"op":"big"}`, nil))
		f = r.next(t)
		require.Equal(t, wire.TypeError, f.Type)
		require.Contains(t, string(f.Control), "exceeds the maximum")
	})
	t.Run("cancel", func(t *testing.T) {
		s := &streamed{n: 1 << 20, err: make(chan error, 1)} // 1 GB if nothing stopped it
		res.Store(s)
		r := rawHandshake(t, ts, "[3]")
		r.send(t, rawFrame(t, wire.TypeAdmin, 2, `{"op":"big"}`, nil))
		require.Equal(t, wire.TypePart, r.next(t).Type)
		r.send(t, cancelFrame(t, 2))
		select {
		case err := <-s.err:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(cancelWait):
			t.Fatal("WriteJSON went on after the cancel")
		}
		require.Less(t, s.wrote.Load(), int32(10000))
		for {
			f := r.next(t)
			if f.Type == wire.TypeError {
				require.Contains(t, string(f.Control), `"cancelled"`)
				break
			}
			require.Equal(t, wire.TypePart, f.Type)
		}
	})
}

// failingWriter fails once it has taken n bytes.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// AdminTo writes a reply many frames long to its writer as it arrives,
// the same bytes Admin assembles; a writer that fails ends the request
// with its error (the server is told to stop) and the connection serves on.
func TestAdminTo(t *testing.T) {
	res := makeBig(5 << 20)
	ts := newTestServer(t, Config{Admin: bigAdmin(res, []byte("tail"), nil), MaxFrame: 64 << 10})
	want, err := json.Marshal(res)
	require.NoError(t, err)
	for _, mode := range clientModes {
		t.Run(mode, func(t *testing.T) {
			c := ts.client(t, mode)
			var got bytes.Buffer
			data, err := c.AdminTo(context.Background(), "big", nil, nil, &got)
			require.NoError(t, err)
			require.Equal(t, string(want), got.String())
			require.Equal(t, "tail", string(data))

			_, err = c.AdminTo(context.Background(), "big", nil, nil, &failingWriter{n: 1 << 20})
			require.ErrorContains(t, err, "disk full")
			require.Eventually(t, func() bool { return ts.inflight() == 0 }, cancelWait, time.Millisecond)
			ctl, _, err := c.Admin(context.Background(), "small", nil, nil)
			require.NoError(t, err)
			require.JSONEq(t, `{"n":1}`, string(ctl))
		})
	}
}

package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/wire"
)

// A call runs on the goroutine that read it; one that blocks has the
// connection's reading taken over by its standby goroutine, so that the
// connection's other requests are served meanwhile and its cancel frames
// are read.
func TestBlockingCallHandsOverReading(t *testing.T) {
	for _, mode := range clientModes {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			ctx := context.Background()
			c := ts.client(t, mode)
			h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
			require.NoError(t, err)
			before := ts.Stats().Handovers

			// Two calls that block, one after the other on the same
			// connection: the second is read only after the first
			// handed the reading over.
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errc := make(chan error, 2)
			for range 2 {
				go func() {
					_, err := h.Call(cctx, "block", nil)
					errc <- err
				}()
				waitEntered(t, ts)
			}
			// The connection is still read and served while both block:
			// the reading was handed over twice.
			out, err := h.Call(ctx, "echo", []byte("x"))
			require.NoError(t, err)
			require.Equal(t, []byte("x"), out)
			require.NoError(t, c.Ping(ctx))
			require.GreaterOrEqual(t, ts.Stats().Handovers-before, int64(2))

			cancel()
			for range 2 {
				require.ErrorIs(t, <-errc, context.Canceled)
				waitLeft(t, ts, context.Canceled)
			}
			out, err = h.Call(ctx, "echo", []byte("y"))
			require.NoError(t, err)
			require.Equal(t, []byte("y"), out)
			require.NoError(t, h.Close())
			ts.reg.waitFreed(t, h.ClientID())
			ts.reg.checkTrace(t, h.ClientID())
		})
	}
}

// A client that writes a call that blocks and many more behind it in one
// write (an eager pipeline, or an attacker hoping to stall the
// connection): the calls already buffered behind the blocking one are
// read by its standby and answered while it blocks; the blocked call is
// cancelled by a frame read meanwhile; the session then ends with a valid
// lifecycle, and TestMain's leak check finds nothing left.
func TestPipelinedCallsBehindBlockingCall(t *testing.T) {
	ts := newTestServer(t, Config{})
	nc, err := net.Dial("unix", ts.sock)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	d := wire.NewDecoder(nc, 0)
	_, err = nc.Write(rawFrame(t, wire.TypeHello, 1, fmt.Sprintf(`{"protocol":"drvkit-userclient","versions":[%d]}`, wire.Version), nil))
	require.NoError(t, err)
	f, err := d.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeWelcome, f.Type, "hello: %s", f.Control)
	_, err = nc.Write(rawFrame(t, wire.TypeOpen, 2, `{"match":{"class":"TestDevice"}}`, nil))
	require.NoError(t, err)
	f, err = d.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeReply, f.Type, "open: %s", f.Control)
	var open wire.OpenReply
	require.NoError(t, json.Unmarshal(f.Control, &open))

	const blockID, first, last = 10, 11, 60
	call := func(id uint64, method string, data []byte) []byte {
		return rawFrame(t, wire.TypeCall, id, fmt.Sprintf(`{"handle":%d,"method":%q}`, open.Handle, method), data)
	}
	batch := call(blockID, "block", nil)
	for id := uint64(first); id <= last; id++ {
		batch = append(batch, call(id, "echo", fmt.Appendf(nil, "n%d", id))...)
	}
	batch = append(batch, rawFrame(t, wire.TypePing, last+1, "", nil)...)
	_, err = nc.Write(batch) // one write: every frame is buffered when the first blocks
	require.NoError(t, err)
	waitEntered(t, ts)

	answered := map[uint64]bool{}
	for len(answered) < last+1-first+1 {
		f, err := d.ReadFrame()
		require.NoError(t, err, "answers read while the first call blocks: %d", len(answered))
		require.NotEqual(t, uint64(blockID), f.ID, "the blocking call answered before it was cancelled")
		require.False(t, answered[f.ID], "frame %d answered twice", f.ID)
		answered[f.ID] = true
		if f.ID == last+1 {
			require.Equal(t, wire.TypeReply, f.Type, "ping")
			continue
		}
		require.Equal(t, wire.TypeReply, f.Type, "call %d: %s", f.ID, f.Control)
		require.Equal(t, fmt.Sprintf("n%d", f.ID), string(f.Data))
	}

	_, err = nc.Write(rawFrame(t, wire.TypeCancel, blockID, "", nil))
	require.NoError(t, err)
	f, err = d.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeError, f.Type)
	require.Equal(t, uint64(blockID), f.ID)
	waitLeft(t, ts, context.Canceled)

	_, err = nc.Write(rawFrame(t, wire.TypeClose, 99, fmt.Sprintf(`{"handle":%d}`, open.Handle), nil))
	require.NoError(t, err)
	f, err = d.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, wire.TypeReply, f.Type, "close: %s", f.Control)
	require.NoError(t, nc.Close())
	ts.reg.waitFreed(t, open.Client)
	ts.reg.checkTrace(t, open.Client)
}

package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
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

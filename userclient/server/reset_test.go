package server

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
)

// After the connection ended, a handle's calls say the connection is gone
// (ErrClosed), not only that the service is (ErrTerminated).
func TestCallAfterDisconnect(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx := context.Background()
	c := ts.dial(t)
	h, err := c.Open(ctx, userclient.Match{Class: "TestDevice"})
	require.NoError(t, err)
	require.NoError(t, ts.Close())
	<-c.Done()
	_, err = h.Call(ctx, "echo", nil)
	require.ErrorIs(t, err, userclient.ErrClosed)
	require.ErrorIs(t, err, userclient.ErrTerminated)
}

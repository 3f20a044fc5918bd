package main

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

type fakeDirect struct {
	server.Session
	handed *os.File
}

func (f *fakeDirect) DirectCalls() bool { return true }
func (f *fakeDirect) HandOver(_ context.Context, conn *os.File, _, _ int) error {
	f.handed = conn
	return nil
}

// TestCountedSessionPassesDirect: the daemon's session counter does not
// hide a bundle's direct call channel from the server.
func TestCountedSessionPassesDirect(t *testing.T) {
	inner := &fakeDirect{}
	var s server.Session = &countedSession{Session: inner}
	ds, ok := s.(server.DirectSession)
	require.True(t, ok)
	require.True(t, ds.DirectCalls())
	require.NoError(t, ds.HandOver(context.Background(), os.Stdin, 0, 0))
	require.Equal(t, os.Stdin, inner.handed)

	plain := &countedSession{Session: struct{ server.Session }{}}
	require.False(t, plain.DirectCalls())
	require.ErrorIs(t, plain.HandOver(context.Background(), os.Stdin, 0, 0), userclient.ErrNoMethod)
}

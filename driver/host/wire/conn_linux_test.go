package wire_test

import (
	"io"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/host/wire"
)

// TestConn: messages keep their boundaries and descriptors; an oversized
// or malformed message is refused with its descriptors closed, and the
// connection goes on; a closed peer is io.EOF.
func TestConn(t *testing.T) {
	a, peer, err := wire.Pair()
	require.NoError(t, err)
	defer a.Close()
	rawFD, err := syscall.Dup(int(peer.Fd()))
	require.NoError(t, err)
	raw := os.NewFile(uintptr(rawFD), "raw")
	b, err := wire.NewConn(peer)
	require.NoError(t, err)

	f, err := os.Open("/dev/null")
	require.NoError(t, err)
	defer f.Close()
	start := &wire.Message{Type: wire.TypeStart, ID: 1, Personality: &wire.Personality{Class: "C"}, Nub: &wire.Nub{Class: "N"},
		Files: []wire.File{{Resource: "null", Node: "/dev/null", Kind: "test"}}}
	require.NoError(t, a.Send(start, f))
	require.NoError(t, a.Send(&wire.Message{Type: wire.TypeStop, ID: 2}))
	m, files, err := b.Receive()
	require.NoError(t, err)
	require.Equal(t, wire.TypeStart, m.Type)
	require.Len(t, files, 1)
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(files[0].Fd())))
	require.NoError(t, err)
	require.Equal(t, "/dev/null", target)
	files[0].Close()
	m, files, err = b.Receive()
	require.NoError(t, err)
	require.Equal(t, wire.TypeStop, m.Type)
	require.Empty(t, files)

	// From the peer's side, by hand: too large, then descriptors on a
	// message that may not carry them, then a good one.
	require.NoError(t, syscall.Sendmsg(int(raw.Fd()), make([]byte, wire.MaxMessage+1), nil, nil, 0))
	_, _, err = a.Receive()
	require.ErrorIs(t, err, wire.ErrTooLarge)
	before := fdCount(t)
	require.NoError(t, syscall.Sendmsg(int(raw.Fd()), []byte(`{"type":"log","text":"x"}`), syscall.UnixRights(int(f.Fd())), nil, 0))
	_, _, err = a.Receive()
	require.EqualError(t, err, "malformed message: log carries descriptors")
	require.Equal(t, before, fdCount(t), "the refused message's descriptors are closed")
	require.NoError(t, b.Send(&wire.Message{Type: wire.TypeLog, Text: "fine"}))
	m, _, err = a.Receive()
	require.NoError(t, err)
	require.Equal(t, "fine", m.Text)

	require.NoError(t, b.Close())
	require.NoError(t, raw.Close())
	_, _, err = a.Receive()
	require.ErrorIs(t, err, io.EOF)
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

//go:build linux

package hotplug

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAcceptChecks exercises the sender checks without a socket: the kernel
// is port id 0 with uid 0 credentials; anything else is dropped and counted.
func TestAcceptChecks(t *testing.T) {
	msg := "add@/devices/virtual/block/loop9\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop9\x00SUBSYSTEM=block\x00SEQNUM=5\x00"
	n := &Netlink{buf: make([]byte, 4096), oob: make([]byte, 256)}
	try := func(pid uint32, cred *unix.Ucred, data string) bool {
		copy(n.buf, data)
		oobn := 0
		if cred != nil {
			oobn = copy(n.oob, unix.UnixCredentials(cred))
		}
		_, ok := n.accept(len(data), oobn, pid)
		return ok
	}
	require.True(t, try(0, &unix.Ucred{}, msg))
	require.False(t, try(4242, &unix.Ucred{Pid: 4242}, msg))
	require.False(t, try(0, nil, msg))
	require.False(t, try(0, &unix.Ucred{Uid: 1000}, msg))
	require.False(t, try(0, &unix.Ucred{}, "garbage"))
	require.False(t, try(0, &unix.Ucred{}, string(make([]byte, 4096))[:10]))
	_, ok := n.accept(len(n.buf)+1, len(unix.UnixCredentials(&unix.Ucred{})), 0)
	require.False(t, ok, "truncated datagram")
	require.Equal(t, Stats{Received: 7, NotKernel: 1, NoCreds: 1, NotRoot: 1, Malformed: 3}, n.Stats())
}

func TestCredUID(t *testing.T) {
	// Credentials after another control message, and malformed lengths.
	rights := unix.UnixRights(3)
	creds := unix.UnixCredentials(&unix.Ucred{Pid: 1, Uid: 77, Gid: 2})
	uid, ok := credUID(append(append([]byte{}, rights...), creds...))
	require.True(t, ok)
	require.Equal(t, uint32(77), uid)
	_, ok = credUID(rights)
	require.False(t, ok)
	_, ok = credUID(creds[:unix.CmsgLen(unix.SizeofUcred)-1])
	require.False(t, ok)
	_, ok = credUID(nil)
	require.False(t, ok)
}

func BenchmarkAccept(b *testing.B) {
	corpus := make([][]byte, 0)
	raw := loadCorpus(b)
	corpus = append(corpus, raw...)
	n := &Netlink{buf: make([]byte, maxDatagram), oob: make([]byte, 256)}
	oobn := copy(n.oob, unix.UnixCredentials(&unix.Ucred{}))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := corpus[i%len(corpus)]
		copy(n.buf, d)
		if _, ok := n.accept(len(d), oobn, 0); !ok {
			b.Fatal("rejected")
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

func TestNetlinkSocketOptions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: SO_RCVBUFFORCE")
	}
	n, err := NewNetlink(NetlinkConfig{Classes: []Class{}, ReceiveBuffer: 64 << 20})
	require.NoError(t, err)
	defer n.Close()
	var rcvbuf, passcred int
	var sa unix.Sockaddr
	var flags int
	raw, err := n.f.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, raw.Control(func(fd uintptr) {
		rcvbuf, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		passcred, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED)
		sa, _ = unix.Getsockname(int(fd))
		flags, _ = unix.FcntlInt(fd, unix.F_GETFD, 0)
	}))
	// Forced past net.core.rmem_max (the kernel doubles the request).
	require.GreaterOrEqual(t, rcvbuf, 64<<20)
	require.Equal(t, 1, passcred)
	require.Equal(t, uint32(1), sa.(*unix.SockaddrNetlink).Groups)
	require.NotZero(t, flags&unix.FD_CLOEXEC)

	// Queued events are not handed out after Close.
	n.pending = append(n.pending, Event{})
	require.NoError(t, n.Close())
	_, err = n.Next(context.Background())
	require.ErrorIs(t, err, ErrClosed)
}

// Every rejected datagram is counted; the log gets one warning per
// interval with the sender's port id and uid and how many were suppressed,
// so a forger cannot flood it.
func TestRejectedUeventsAreLogged(t *testing.T) {
	var buf bytes.Buffer
	n := &Netlink{buf: make([]byte, 4096), oob: make([]byte, 256),
		cfg: NetlinkConfig{Log: slog.New(slog.NewJSONHandler(&buf, nil))}}
	n.rejectLog.Interval = 300 * time.Millisecond
	msg := "add@/devices/x\x00ACTION=add\x00DEVPATH=/devices/x\x00SUBSYSTEM=block\x00SEQNUM=5\x00"
	forge := func() {
		copy(n.buf, msg)
		oobn := copy(n.oob, unix.UnixCredentials(&unix.Ucred{Pid: 4242, Uid: 1000}))
		_, ok := n.accept(len(msg), oobn, 4242)
		require.False(t, ok)
	}
	start := time.Now()
	for range 100 {
		forge()
	}
	if time.Since(start) > 250*time.Millisecond {
		t.Skip("machine too slow to stay within one log interval")
	}
	time.Sleep(350 * time.Millisecond)
	forge()
	require.EqualValues(t, 101, n.Stats().NotKernel)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, buf.String())
	var first, second map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &second))
	require.Equal(t, "WARN", first["level"])
	require.Equal(t, "rejected uevent", first["msg"])
	require.Equal(t, "sender is not the kernel", first["why"])
	require.EqualValues(t, 4242, first["port_id"])
	require.EqualValues(t, 1000, first["uid"])
	require.EqualValues(t, 0, first["suppressed"])
	require.EqualValues(t, 99, second["suppressed"])
}

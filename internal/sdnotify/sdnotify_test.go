package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// listen is a notification socket as systemd makes one.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestNotifyPathAndAbstract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	n := New(path)
	require.True(t, n.Enabled())
	require.NoError(t, n.Notify(Ready+"\nSTATUS=serving"))
	require.Equal(t, "READY=1\nSTATUS=serving", read(t, c))

	abstract := "@drvkit-sdnotify-test-" + strconv.Itoa(os.Getpid())
	ca := listen(t, "\x00"+abstract[1:])
	require.NoError(t, New(abstract).Notify(Watchdog))
	require.Equal(t, "WATCHDOG=1", read(t, ca))
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	require.False(t, n.Enabled())
	require.NoError(t, n.Notify(Ready))
}

func TestNotifyErrors(t *testing.T) {
	require.ErrorIs(t, New("/x").Notify("READY=1\x00"), ErrBadState)
	require.ErrorIs(t, New("/x").Notify("READY"), ErrBadState)
	err := New(filepath.Join(t.TempDir(), "absent")).Notify(Ready)
	var oe *OpError
	require.ErrorAs(t, err, &oe)
	require.Contains(t, err.Error(), "notify ")
	require.Contains(t, err.Error(), "absent: ")
}

func TestWatchdogInterval(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	require.Zero(t, WatchdogInterval())
	t.Setenv("WATCHDOG_USEC", "20000000")
	t.Setenv("WATCHDOG_PID", "")
	require.Equal(t, 10*time.Second, WatchdogInterval())
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	require.Equal(t, 10*time.Second, WatchdogInterval())
	t.Setenv("WATCHDOG_PID", "1")
	require.Zero(t, WatchdogInterval(), "another process's watchdog")
	t.Setenv("WATCHDOG_USEC", "junk")
	require.Zero(t, WatchdogInterval())
}

package server

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/userclient"
)

// TestChildKilled: an application process is SIGKILLed at each stage; each
// time its user client is freed, the provider is closed, the lifecycle is
// in order and nothing is left.
func TestChildKilled(t *testing.T) {
	for _, stage := range []string{"after open", "mid call", "holding open during terminate", "notifications unread"} {
		t.Run(stage, func(t *testing.T) {
			ts := newTestServer(t, Config{})
			role := map[string]string{"after open": "open", "mid call": "call",
				"holding open during terminate": "hold", "notifications unread": "unread"}[stage]
			ch := startChild(t, "", role, ts.sock, nil)
			id := ch.opened(t)
			var terminated <-chan struct{}
			switch role {
			case "call":
				require.Equal(t, "block", <-ts.reg.entered)
			case "hold":
				// Termination waits for this client's close, which only
				// its death will bring.
				terminated = ts.dev.terminate()
				select {
				case <-terminated:
					t.Fatal("terminate did not wait for the open client")
				case <-time.After(20 * time.Millisecond):
				}
			case "unread":
				// Back up the child's socket (it asked for notifications
				// and never reads them) without reaching the server's
				// bound: 1.2 MiB against ~0.7 MiB of client and socket
				// buffers, 8 MiB allowed.
				for range 300 {
					ts.dev.message(make([]byte, 4096))
				}
				require.Equal(t, 1, ts.Stats().Sessions)
			}
			killed := ch.kill()
			freed := ts.reg.waitFreed(t, id)
			t.Logf("SIGKILL → freed: %v", freed.Sub(killed))
			ts.reg.checkTrace(t, id)
			d := ts.waitDisconnect(t, ch.cmd.Process.Pid)
			require.Error(t, d.reason)
			require.NotErrorIs(t, d.reason, userclient.ErrOverflow)
			if terminated != nil {
				select {
				case <-terminated:
				case <-time.After(10 * time.Second):
					t.Fatal("termination still waits after the client died")
				}
			}
		})
	}
}

func TestChildKilledMidHandshake(t *testing.T) {
	ts := newTestServer(t, Config{})
	ch := startChild(t, "", "handshake", ts.sock, nil)
	ch.expect(t, "connected")
	require.Eventually(t, func() bool { return ts.Stats().Conns == 1 }, 10*time.Second, time.Millisecond)
	killed := ch.kill()
	d := ts.waitDisconnect(t, ch.cmd.Process.Pid)
	t.Logf("SIGKILL → connection ended: %v (%v)", d.at.Sub(killed), d.reason)
	require.Equal(t, 0, ts.Stats().Conns)
	require.Equal(t, 0, ts.reg.liveClients())
}

// TestForkChildKeepsSocket defines the fork semantics: a connection belongs
// to the process that connected it. When that process dies, its sessions
// end and the server closes the connection, even though a child that
// inherited the descriptor is alive and holds it.
func TestForkChildKeepsSocket(t *testing.T) {
	ts := newTestServer(t, Config{})
	ch := startChild(t, "", "fork", ts.sock, nil)
	id := ch.opened(t)
	var gcPid int
	_, err := fmtSscan(ch.expect(t, "grandchild "), "grandchild %d", &gcPid)
	require.NoError(t, err)
	ch.expect(t, "inherited")
	t.Cleanup(func() { syscall.Kill(gcPid, syscall.SIGKILL) })

	killed := ch.kill()
	freed := ts.reg.waitFreed(t, id)
	t.Logf("connector SIGKILLed, grandchild holds the socket: freed after %v", freed.Sub(killed))
	ts.reg.checkTrace(t, id)
	d := ts.waitDisconnect(t, ch.cmd.Process.Pid)
	require.ErrorIs(t, d.reason, ErrPeerExited)
	// The grandchild sees the server close the connection.
	ch.expect(t, "eof")
}

// The reverse: a child that inherited the socket exits; the connecting
// process lives on and its session is untouched.
func TestForkChildExits(t *testing.T) {
	ts := newTestServer(t, Config{})
	ch := startChild(t, "", "fork-child-exits", ts.sock, nil)
	id := ch.opened(t)
	ch.expect(t, "grandchild exited")
	ch.expect(t, "ping <nil>")
	require.Equal(t, 1, ts.Stats().Sessions)
	ch.kill()
	ts.reg.waitFreed(t, id)
	ts.reg.checkTrace(t, id)
}

// TestPermissionUnprivileged runs the application as nobody: the socket is
// group-accessible to it, the policy admits its group to PublicDevice only.
func TestPermissionUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another uid")
	}
	const nobody = 65534
	ts := newTestServer(t, Config{GID: nobody, Policy: Policy{Rules: []Rule{{GIDs: []uint32{nobody}, Classes: []string{"PublicDevice"}}}}})
	ts.reg.publish(t, "PublicDevice", "pub0")
	// The test binary lives in a private build directory: copy it where
	// nobody may execute it.
	bin := filepath.Join(ts.dir, "child.test")
	copyFile(t, os.Args[0], bin)

	ch := startChild(t, bin, "permission", ts.sock, &syscall.Credential{Uid: nobody, Gid: nobody})
	// A service it may not open is answered as one that does not exist:
	// no oracle for what is plugged in.
	refused := ch.expect(t, "open TestDevice: ")
	require.Contains(t, refused, "no_service=true")
	absent := ch.expect(t, "open NoSuchDevice: ")
	require.Equal(t, strings.ReplaceAll(refused, "TestDevice", "NoSuchDevice"), absent)
	require.Equal(t, "ping: <nil>", ch.expect(t, "ping"))
	require.Equal(t, `open PublicDevice: ok call "hi" <nil>`, ch.expect(t, "open PublicDevice"))
	require.Contains(t, ch.expect(t, "admin: "), "permission=true")
	require.NoError(t, ch.cmd.Wait())
	d := ts.waitDisconnect(t, ch.cmd.Process.Pid)
	require.Equal(t, uint32(nobody), d.cred.UID)
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

func fmtSscan(s, format string, args ...any) (int, error) {
	return fmt.Sscanf(strings.TrimSpace(s), format, args...)
}

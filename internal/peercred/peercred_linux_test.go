package peercred

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain doubles as the peer: with PEERCRED_DIAL set, the binary dials
// that address, writes one byte and waits for the connection to close.
func TestMain(m *testing.M) {
	if addr := os.Getenv("PEERCRED_DIAL"); addr != "" {
		c, err := net.Dial(os.Getenv("PEERCRED_NET"), addr)
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(2)
		}
		_, _ = c.Write([]byte{1})
		_, _ = c.Read(make([]byte, 1))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// dialAs runs the test binary as uid/gid dialing addr on network, and
// returns the server's end of its connection.
func dialAs(t *testing.T, ln net.Listener, uid, gid uint32) net.Conn {
	t.Helper()
	// The go tool's build directory is root's alone: run a copy.
	dir, err := os.MkdirTemp("", "peercred")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	bin := filepath.Join(dir, "peer.test")
	b, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	cmd := exec.Command(bin)
	cmd.Env = []string{"PEERCRED_DIAL=" + ln.Addr().String(), "PEERCRED_NET=" + ln.Addr().Network()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_, err = c.Read(make([]byte, 1)) // connected and running
	require.NoError(t, err)
	return c
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a peer as another user")
	}
}

func TestTCPPeerIsAnotherUser(t *testing.T) {
	requireRoot(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			c := dialAs(t, ln, 65534, 65534)
			cred, err := TCP(c.LocalAddr(), c.RemoteAddr())
			require.NoError(t, err)
			require.Equal(t, uint32(65534), cred.UID)
			require.Equal(t, NoGID, cred.GID)
		})
	}
}

func TestTCPPeerInProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer cc.Close()
	sc, err := ln.Accept()
	require.NoError(t, err)
	defer sc.Close()
	cred, err := TCP(sc.LocalAddr(), sc.RemoteAddr())
	require.NoError(t, err)
	require.Equal(t, uint32(os.Geteuid()), cred.UID)

	// A connection that is gone is not found, not someone else's.
	cc.Close()
	local, remote := sc.LocalAddr(), sc.RemoteAddr()
	sc.Close()
	_, err = TCP(local, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: remote.(*net.TCPAddr).Port + 1})
	require.ErrorIs(t, err, ErrNotFound)
	_, err = TCP(local, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1})
	require.ErrorIs(t, err, ErrNotFound, "not loopback")
}

func TestUnixPeerIsAnotherUser(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "peercred")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	path := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	require.NoError(t, os.Chmod(path, 0o777))
	c := dialAs(t, ln, 65534, 65533)
	cred, err := Unix(c.(*net.UnixConn))
	require.NoError(t, err)
	require.Equal(t, Cred{UID: 65534, GID: 65533, PID: cred.PID}, cred)
	require.NotZero(t, cred.PID)
}

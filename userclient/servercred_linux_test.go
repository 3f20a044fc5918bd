package userclient

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Dial refuses a server that is neither root nor the caller, before it
// sends anything: a socket squatted by another user learns nothing.
func TestDialChecksServerUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a listener as another uid")
	}
	const nobody = 65534
	dir, err := os.MkdirTemp("", "uc")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	sock := filepath.Join(dir, "squat.sock")
	bin := filepath.Join(dir, "listener.test")
	b, err := os.ReadFile(os.Args[0])
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bin, b, 0o755))
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DRVKIT_TEST_LISTEN="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ready\n", line)

	_, err = Dial(context.Background(), sock)
	require.ErrorIs(t, err, ErrUntrustedServer)
	require.EqualError(t, err, "dial "+sock+": untrusted server: the server runs as uid 65534, neither root nor you (uid 0)")
	// Trusted on request: it gets as far as the handshake (which this
	// silent listener never answers).
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = Dial(ctx, sock, WithServerUID(nobody))
	require.NotErrorIs(t, err, ErrUntrustedServer)
}

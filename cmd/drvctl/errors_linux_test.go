package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
)

// nobody is the unprivileged user the permission tests run drvctl as.
const nobody = 65534

// asNobody returns a command running this test binary as drvctl with uid
// and gid nobody; the binary is copied where nobody may execute it.
func asNobody(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	return asNobodyRole(t, dir, "drvctl", args...)
}

// asNobodyRole is asNobody playing role (see TestMain).
func asNobodyRole(t *testing.T, dir, role string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	bin := filepath.Join(dir, "drvctl.test")
	if _, err := os.Stat(bin); err != nil {
		src, err := os.Open(exe)
		require.NoError(t, err)
		defer src.Close()
		dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
		require.NoError(t, err)
		_, err = io.Copy(dst, src)
		require.NoError(t, errors.Join(err, dst.Close()))
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"DRVCTL_TEST_ROLE=" + role, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	return ee.ExitCode()
}

// A user the socket's permissions keep out is told so, not asked whether
// the daemon runs; one who reaches it but whom the policy refuses is told
// what the policy requires. Run as a real unprivileged process (needs root
// to switch to it).
func TestPermissionErrorsGolden(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run drvctl as another user")
	}
	leaktest.Check(t)
	// nobody must reach the binary and, for the policy cases, the socket.
	dir, err := os.MkdirTemp("", "drvctl-perm-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	run := filepath.Join(dir, "run")
	require.NoError(t, os.Mkdir(run, 0o700))

	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(run, "d.sock")
	// The socket's group is nobody's: once nobody may enter its
	// directory, nobody may connect, and is no admin.
	d := startServe(t, serveOptions{socket: sock, socketGroup: nobody, sim: scn, drivers: "sg", logFormat: "text",
		logLevel: "error", trace: "all", termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})

	tests := []struct {
		name    string
		dirMode os.FileMode // of the socket's directory
		args    []string
	}{
		{"permission-socket", 0o700, []string{"inspect", "--socket", sock}},
		{"permission-admin", 0o755, []string{"inspect", "--socket", sock}},
		{"permission-monitor", 0o755, []string{"monitor", "--socket", sock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.Chmod(run, tt.dirMode))
			out, err := asNobody(t, dir, tt.args...).CombinedOutput()
			golden(t, filepath.Join("errors", tt.name+".txt"), errorOutput(exitCode(t, err), string(out), dir))
		})
	}
	require.NoError(t, d.stop(), "%s", d.log.Bytes())
}

// The metrics and the explorer follow the socket's read right: a real
// process running as nobody is refused without it, over loopback TCP and
// over the listener's Unix socket, and let in once its group may read.
func TestHTTPFollowsReadRight(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	dir, err := os.MkdirTemp("", "drvctl-http-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	tests := []struct {
		name     string
		unix     bool
		readGIDs string
		want     string
	}{
		{"tcp, no read right", false, "", "403 permission denied: the metrics and the registry explorer need the socket's read right"},
		{"tcp, read group", false, "65534", "200 "},
		{"unix, no read right", true, "", "403 permission denied"},
		{"unix, read group", true, "65534", "200 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			o := simOptions(t)
			o.readGIDs = tt.readGIDs
			if tt.unix {
				o.observe.addr = filepath.Join(dir, "http.sock")
				o.socketGroup = nobody
			}
			d := startServe(t, o)
			url := httpBase(d) + "/metrics"
			var out []byte
			if tt.unix {
				cmd := asNobodyRole(t, dir, "httpget", "unix:"+o.observe.addr)
				out, err = cmd.CombinedOutput()
			} else {
				out, err = asNobodyRole(t, dir, "httpget", url).CombinedOutput()
			}
			require.NoError(t, err, "%s", out)
			require.True(t, strings.HasPrefix(string(out), tt.want), "got %q", out)
			require.NoError(t, d.stop())
		})
	}
}

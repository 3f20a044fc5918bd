package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
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

// The access policy, tried as a real unprivileged process (uid and gid
// nobody; needs root to switch to it). With the defaults a local user
// reads — inspect, drivers, status, why, leaks, monitor — but sees no other
// user's process, and is refused opens and administrative calls with what
// the policy requires. With --read-any-user=false reading is refused too;
// with --allow-uids the same user opens. A user the socket's permissions
// keep out is told so, not asked whether the daemon runs.
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
	runDir := filepath.Join(dir, "run")
	require.NoError(t, os.Mkdir(runDir, 0o755))

	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	opts := serveOptions{sim: scn, drivers: "sg", logFormat: "text", socketGroup: -1,
		logLevel: "error", trace: "all", termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second}
	// The default policy.
	o := opts
	o.socket = filepath.Join(runDir, "d.sock")
	d := startServe(t, o)
	sock := o.socket
	// Root's application holds the disk open: a user client nobody may
	// see but not identify.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := userclient.Dial(ctx, sock)
	require.NoError(t, err)
	defer app.Close()
	h, err := app.OpenWait(ctx, userclient.Match{Personality: "sg"})
	require.NoError(t, err)
	defer h.Close()
	uc := findClass(t, d.reg, server.UserClientClass)
	disk := findClass(t, d.reg, "SCSIDevice")

	asUser := func(t *testing.T, args ...string) (int, string) {
		cmd := asNobody(t, dir, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return exitCode(t, err), stdout.String() + stderr.String()
	}
	t.Run("reads", func(t *testing.T) {
		for _, args := range [][]string{{"inspect"}, {"inspect", "-l"}, {"inspect", "-o", "json"}, {"drivers"}, {"status"},
			{"why", fmt.Sprint(uc.ID())}, {"leaks"}, {"leaks", "-o", "json"}} {
			code, out := asUser(t, append(args, "--socket", sock)...)
			require.Equal(t, 0, code, "%v: %s", args, out)
			for _, hidden := range []string{"UserClient@pid", `"pid"`, `"comm"`, "userclient pid", `UserClient#N \"pid`} {
				require.NotContains(t, strings.ReplaceAll(out, fmt.Sprint("#", uc.ID()), "#N"), hidden, "%v", args)
			}
		}
		code, out := asUser(t, "inspect", "-l", "--socket", sock)
		require.Equal(t, 0, code)
		require.Contains(t, out, "+-o UserClient  <class UserClient", "the client is shown, its process is not")
		// Root sees it all.
		e, stdout, _ := testEnv(nil, 0)
		require.Equal(t, 0, run([]string{"inspect", "-l", "--socket", sock}, e))
		require.Contains(t, stdout.String(), "UserClient@pid")
		require.Contains(t, stdout.String(), `"comm" = `)
	})
	t.Run("monitor", func(t *testing.T) {
		cmd := asNobody(t, dir, "monitor", "--replay", "--socket", sock)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		// The replay is printed at once; then the monitor waits for events.
		timer := time.AfterFunc(5*time.Second, func() { _ = cmd.Process.Kill() })
		defer timer.Stop()
		sc := bufio.NewScanner(out)
		var lines []string
		sawClient := false
		for !sawClient && sc.Scan() {
			line := sc.Text()
			lines = append(lines, line)
			require.NotContains(t, line, "pid")
			sawClient = strings.Contains(line, "UserClient")
		}
		require.True(t, sawClient, "the replay shows the user client's attach:\n%s", strings.Join(lines, "\n"))
	})

	tests := []struct {
		name    string
		dirMode os.FileMode // of the socket's directory
		args    []string
	}{
		{"permission-socket", 0o700, []string{"inspect", "--socket", sock}},
		{"permission-terminate", 0o755, []string{"terminate", fmt.Sprint(disk.ID()), "--socket", sock}},
		{"permission-unload", 0o755, []string{"unload", "sg", "--socket", sock}},
		{"permission-sim", 0o755, []string{"sim", "scsi remove 0:0:0:0", "--socket", sock}},
		{"permission-leaks-pprof", 0o755, []string{"leaks", "-o", "pprof", "-f", "/dev/null", "--socket", sock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, os.Chmod(runDir, tt.dirMode))
			code, out := asUser(t, tt.args...)
			golden(t, filepath.Join("errors", tt.name+".txt"), errorOutput(code, out, dir))
		})
	}
	require.NoError(t, os.Chmod(runDir, 0o755))
	t.Run("permission-open", func(t *testing.T) {
		code, out := asUser(t, "--open-as-app", "sg", sock)
		golden(t, filepath.Join("errors", "permission-open.txt"), errorOutput(code, out, dir))
	})
	require.True(t, disk.State().Active, "nothing the refused calls asked happened")
	require.NoError(t, h.Close())
	require.NoError(t, app.Close())
	require.NoError(t, d.stop(), "%s", d.log.Bytes())

	// Reading restricted to listed users; nobody may open.
	o = opts
	o.socket, o.readListed, o.allowUIDs = filepath.Join(runDir, "r.sock"), true, fmt.Sprint(nobody)
	o.socketGroup = nobody // the socket is 0660 now: nobody reaches it through its group
	d = startServe(t, o)
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"permission-read", []string{"inspect", "--socket", o.socket}},
		{"permission-monitor", []string{"monitor", "--socket", o.socket}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out := asUser(t, tt.args...)
			golden(t, filepath.Join("errors", tt.name+".txt"), errorOutput(code, out, dir))
		})
	}
	t.Run("allow-uids opens", func(t *testing.T) {
		code, out := asUser(t, "--open-as-app", "sg", o.socket)
		require.Equal(t, 0, code, "%s", out)
		require.Equal(t, "opened SCSIGenericBlock\n", out)
	})
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
		listed   bool // --read-any-user=false
		readGIDs string
		want     string
	}{
		{"tcp, no read right", false, true, "", "403 permission denied: the metrics and the registry explorer need the read right"},
		{"tcp, read group", false, true, "65534", "200 "},
		{"tcp, any local user (the default)", false, false, "", "200 "},
		{"unix, no read right", true, true, "", "403 permission denied"},
		{"unix, read group", true, true, "65534", "200 "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			o := simOptions(t)
			o.readListed, o.readGIDs = tt.listed, tt.readGIDs
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

// The explorer shows a reader who is not an administrator what the
// socket's read verbs show them: every service, but not another user's
// process behind a user client — in the tree, a service's detail, the
// timelines, the leak report and the event stream. Root sees it all.
func TestExplorerHidesOtherUsersProcesses(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	leaktest.Check(t)
	dir, err := os.MkdirTemp("", "drvctl-explorer-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	o := simOptions(t)
	o.drivers = "sg"
	d := startServe(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app, err := userclient.Dial(ctx, o.socket)
	require.NoError(t, err)
	h, err := app.OpenWait(ctx, userclient.Match{Personality: "sg"})
	require.NoError(t, err)
	uc := findClass(t, d.reg, server.UserClientClass)
	// The user client's own name, and its identifying properties: what
	// nobody must not see of root's application.
	secret := []string{uc.Name(), `"comm"`, `"pid":`, fmt.Sprintf("userclient pid %d", os.Getpid())}
	require.NotEmpty(t, uc.Name())

	base := httpBase(d)
	paths := []string{"/api/tree", fmt.Sprintf("/api/services/%d", uc.ID()), "/api/timeline", "/api/leaks?all=1"}
	for _, p := range paths {
		out, err := asNobodyRole(t, dir, "httpget", "full:"+base+p).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.True(t, strings.HasPrefix(string(out), "200 "), "%s: %s", p, out)
		for _, s := range secret {
			require.NotContains(t, string(out), s, "nobody sees root's process in %s", p)
		}
		require.Contains(t, string(out), server.UserClientClass, "the client itself is shown in %s", p)
		code, body := get(t, base+p)
		require.Equal(t, http.StatusOK, code)
		seen := uc.Name()
		if strings.HasPrefix(p, "/api/leaks") {
			seen = fmt.Sprintf("userclient pid %d", os.Getpid())
		}
		require.True(t, strings.Contains(body, seen), "root sees %q in %s", seen, p)
	}

	// The event stream: nobody follows it while the client closes.
	stream := asNobodyRole(t, dir, "httpget", "stream:"+base+"/api/events")
	var out syncBuffer
	stream.Stdout, stream.Stderr = &out, &out
	require.NoError(t, stream.Start())
	defer func() { _ = stream.Process.Kill(); _ = stream.Wait() }()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "event: hello") }, 20*time.Second, 10*time.Millisecond,
		"the stream says hello first: %s", &out)
	require.NoError(t, h.Close())
	require.NoError(t, app.Close())
	freed := fmt.Sprintf(`"step":"free","id":%d,`, uc.ID())
	require.Eventually(t, func() bool { return strings.Contains(out.String(), freed) }, 20*time.Second, 10*time.Millisecond,
		"the client's steps reach the reader, up to its free")
	require.Contains(t, out.String(), `"class":"`+server.UserClientClass+`"`)
	require.NotContains(t, out.String(), uc.Name(), "without its process")
	require.NoError(t, d.stop())
}

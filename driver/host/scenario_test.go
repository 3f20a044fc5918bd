package host_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/userclient"
)

// publicDir is a directory the drivers' user may read, removed at the end.
func publicDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "drvkit-bundle-")
	require.NoError(t, err)
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// pythonBundle copies examples/bundles/pycounter where its user may read
// it and loads its manifest as it is shipped.
func pythonBundle(t *testing.T) *bundle.Manifest {
	found := false
	for _, d := range []string{"/usr/local/bin", "/usr/bin", "/bin"} { // the drivers' PATH
		if _, err := os.Stat(filepath.Join(d, "python3")); err == nil {
			found = true
		}
	}
	if !found {
		t.Skip("python3 is not installed in /usr/local/bin, /usr/bin or /bin: the Python sample driver cannot run")
	}
	dir := publicDir(t)
	src := filepath.Join("..", "..", "examples", "bundles", "pycounter")
	for _, f := range []string{"driver.py", "manifest.toml"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o755))
	}
	m, err := bundle.Load(dir, bundle.Options{})
	require.NoError(t, err)
	return m
}

// goSampleBundle builds examples/bundles/gocounter (driverproc.Main of the
// in-process counter.Entry) and loads it with its shipped manifest.
func goSampleBundle(t *testing.T) *bundle.Manifest {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the sample bundle")
	}
	dir := publicDir(t)
	src := filepath.Join("..", "..", "examples", "bundles", "gocounter")
	out, err := exec.Command(gotool, "build", "-o", filepath.Join(dir, "gocounter"), src).CombinedOutput()
	require.NoError(t, err, "%s", out)
	b, err := os.ReadFile(filepath.Join(src, "manifest.toml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.toml"), b, 0o644))
	m, err := bundle.Load(dir, bundle.Options{})
	require.NoError(t, err)
	return m
}

// TestScenario: the same driver, in process, out of process in Go (the
// very code of the in-process one, through driverproc: the test binary,
// and the shipped sample bundle built from examples/bundles/gocounter) and
// in Python, on
// the same scenario: plug, an application opens it over the socket, calls
// and hears notifications, unplug, unload. Out of process the driver runs
// as the manifest's user with no_new_privs and inherits nothing but its
// socket; at the end no process, descriptor, goroutine or object is left.
func TestScenario(t *testing.T) {
	for _, tc := range []struct {
		name string
		load func(e *env) string
		oop  bool
	}{
		{"inprocess", func(e *env) string { e.load(counter.Entry); return counter.Name }, false},
		{"go", func(e *env) string { return e.loadBundle("counter", "").Name }, true},
		{"python", func(e *env) string { m := pythonBundle(e.t); e.load(e.h.Entry(m)); return m.Name }, true},
		{"gosample", func(e *env) string { m := goSampleBundle(e.t); e.load(e.h.Entry(m)); return m.Name }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			name := tc.load(e)
			nub := e.plug("1-1:1.0")
			inst := e.instance(nub)
			gone := inst.Done()

			c := e.dial()
			defer c.Close()
			h, err := c.Open(e.ctx, userclient.Match{Class: counter.Class})
			require.NoError(t, err)
			// Every out-of-process driver here serves direct call channels
			// (the Go SDK, and the Python sample by hand).
			require.Equal(t, tc.oop, h.Direct())
			out, err := h.Call(e.ctx, "count", nil)
			require.NoError(t, err)
			var r counter.Reply
			require.NoError(t, json.Unmarshal(out, &r))
			require.Equal(t, 11, r.Count, "the nub's start property reached the driver")
			if !tc.oop {
				require.Equal(t, os.Getpid(), r.PID)
			} else {
				pid := e.pid(name)
				require.Equal(t, pid, r.PID, "the driver runs in the process the host reports")
				require.NotEqual(t, os.Getpid(), pid)
				require.True(t, strings.HasPrefix(procStatus(t, pid, "Uid"), "65534\t"), "runs as the manifest's user: %q", procStatus(t, pid, "Uid"))
				require.True(t, strings.HasPrefix(procStatus(t, pid, "Gid"), "65534\t"), procStatus(t, pid, "Gid"))
				require.Equal(t, "1", procStatus(t, pid, "NoNewPrivs"))
				require.Empty(t, strings.TrimSpace(procStatus(t, pid, "Groups")), "no supplementary groups")
				checkInherited(t, pid, h.Direct())
			}

			out, err = h.Call(e.ctx, "echo", []byte("hello"))
			require.NoError(t, err)
			require.Equal(t, "hello", string(out))
			_, err = h.Call(e.ctx, "notify", []byte("ping"))
			require.NoError(t, err)
			n := nextNotification(t, h, userclient.NotificationType(counter.MsgCount.String()))
			require.Equal(t, "ping", string(n.Data))
			require.Equal(t, inst.ID(), n.Service)
			out, err = h.Call(e.ctx, "count", nil)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(out, &r))
			require.Equal(t, 12, r.Count)

			// Unplug: the application hears why, closes, everything goes.
			nub.TerminateWith(driver.CauseUnplug)
			n = nextNotification(t, h, "ServiceIsTerminated")
			require.Equal(t, "provider", n.Cause)
			require.Equal(t, "unplug", n.RootCause)
			require.NoError(t, h.Close())
			select {
			case <-gone:
			case <-e.ctx.Done():
				t.Fatalf("instance not freed: %v", inst.Blockers())
			}
			if tc.oop {
				require.Empty(t, e.status(name).PIDs)
				require.Zero(t, e.status(name).TotalCrashes)
			}
			require.NoError(t, e.r.Unload(e.ctx, name))
			require.NoError(t, c.Close())
			e.finish()
		})
	}
}

// checkInherited: the driver's descriptors are its socket, its output
// pipe and /dev/null, and what its own runtime opened (epoll, eventfd, the
// cgroup's CPU quota) — no file, device or socket of the daemon's.
func checkInherited(t *testing.T, pid int, direct bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		// The Go runtime reads its CPU quota from the cgroup files itself.
		ok := target == "/dev/null" || strings.HasPrefix(target, "pipe:") || strings.HasPrefix(target, "socket:") ||
			strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "/sys/fs/cgroup/")
		require.True(t, ok, "fd %s of the driver is %s", ent.Name(), target)
	}
	// Two sockets: the protocol's, and the granted device's (a simulated
	// device is served over a socket); a third with the application's
	// direct call channel.
	want := 2
	if direct {
		want = 3
	}
	sockets := 0
	for _, ent := range ents {
		if target, _ := os.Readlink(filepath.Join(dir, ent.Name())); strings.HasPrefix(target, "socket:") {
			sockets++
		}
	}
	require.Equal(t, want, sockets)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
)

// The test binary plays drvctl itself (DRVCTL_TEST_ROLE=drvctl) and a
// client application using the Go library (=app), so the end-to-end test
// runs real processes over a real socket without building anything.
func TestMain(m *testing.M) {
	switch os.Getenv("DRVCTL_TEST_ROLE") {
	case "drvctl":
		if len(os.Args) == 4 && os.Args[1] == "--open-as-app" {
			os.Exit(openAsApp(os.Args[2], os.Args[3]))
		}
		os.Exit(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, uid: os.Getuid()}))
	case "app":
		os.Exit(testApp(os.Getenv("DRVCTL_SOCKET")))
	case "httpget":
		os.Exit(testHTTPGet(os.Args[1]))
	}
	os.Exit(m.Run())
}

// testHTTPGet prints the status code of a GET of url, and the body's
// first line ("full:URL": the whole body; "stream:URL": the body as it
// comes, until killed).
func testHTTPGet(url string) int {
	client := http.DefaultClient
	limit := int64(4096)
	if u, ok := strings.CutPrefix(url, "full:"); ok {
		url, limit = u, 16<<20
	}
	if u, ok := strings.CutPrefix(url, "stream:"); ok {
		resp, err := client.Get(u)
		if err != nil {
			fmt.Println("httpget:", err)
			return 1
		}
		fmt.Println(resp.StatusCode)
		_, _ = io.Copy(os.Stdout, resp.Body)
		return 0
	}
	if path, ok := strings.CutPrefix(url, "unix:"); ok {
		client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		url = "http://localhost/metrics"
	}
	resp, err := client.Get(url)
	if err != nil {
		fmt.Println("httpget:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	if limit > 4096 {
		fmt.Println(resp.StatusCode, string(body))
		return 0
	}
	first, _, _ := strings.Cut(string(body), "\n")
	fmt.Println(resp.StatusCode, first)
	return 0
}

// testApp opens usbstorage, writes and reads back a block, then holds the
// device open until killed or the device goes away.
func testApp(socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := userclient.Dial(ctx, socket)
	if err != nil {
		fmt.Println("app: dial:", err)
		return 1
	}
	h, err := c.Open(ctx, userclient.Match{Personality: "usbstorage"})
	if err != nil {
		fmt.Println("app: open:", err)
		return 1
	}
	block := make([]byte, 512)
	copy(block, "written by the test app")
	if _, err := h.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(7, block)); err != nil {
		fmt.Println("app: write:", err)
		return 1
	}
	got, err := h.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(7, 1))
	if err != nil || !bytes.Equal(got, block) {
		fmt.Println("app: read back:", err)
		return 1
	}
	fmt.Println("app: holding")
	for n := range h.Notifications() {
		fmt.Println("app: notification", n.Type)
	}
	return 0
}

type daemonProc struct {
	t      *testing.T
	socket string
	cmd    *exec.Cmd
	log    *syncBuffer
}

func self(t *testing.T, role string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "DRVCTL_TEST_ROLE="+role)
	return cmd
}

func startDaemon(t *testing.T, scenario string) *daemonProc {
	t.Helper()
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte(scenario), 0o644))
	d := &daemonProc{t: t, socket: filepath.Join(dir, "drvkit.sock"), log: &syncBuffer{}}
	d.cmd = self(t, "drvctl", "serve", "--sim", scn, "--socket", d.socket)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	require.NoError(t, d.cmd.Start())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			_ = d.cmd.Wait()
		}
	})
	require.Eventually(t, func() bool {
		_, err := os.Stat(d.socket)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "daemon never opened its socket; log:\n%s", d.log.String())
	return d
}

// ctl runs a drvctl client command against the daemon.
func (d *daemonProc) ctl(args ...string) (string, error) {
	args = append(args, "--socket", d.socket)
	out, err := self(d.t, "drvctl", args...).CombinedOutput()
	return string(out), err
}

func (d *daemonProc) mustCtl(args ...string) string {
	d.t.Helper()
	out, err := d.ctl(args...)
	require.NoError(d.t, err, "drvctl %v: %s", args, out)
	return out
}

func (d *daemonProc) inspect() inspectDoc {
	d.t.Helper()
	var doc inspectDoc
	require.NoError(d.t, json.Unmarshal([]byte(d.mustCtl("inspect", "-o", "json")), &doc))
	return doc
}

func classes(doc inspectDoc) map[string]int {
	m := map[string]int{}
	for _, s := range doc.Services {
		m[s.Class]++
	}
	return m
}

func TestDaemonEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	d := startDaemon(t, "scsi add 0:0:0:0 vendor=QEMU model=\"QEMU HARDDISK\"\n")

	mon := self(t, "drvctl", "monitor", "-o", "json", "--socket", d.socket)
	monOut := &syncBuffer{}
	mon.Stdout, mon.Stderr = monOut, monOut
	require.NoError(t, mon.Start())
	t.Cleanup(func() { _ = mon.Process.Kill(); _ = mon.Wait() })
	time.Sleep(200 * time.Millisecond) // the monitor's Open reaches the daemon

	d.mustCtl("sim", "plug usb 2-1 vid=46f4 pid=0001 serial=E2E ifaces=08/06/50")
	c := classes(d.inspect())
	require.Equal(t, 1, c["USBMassStorage"], "usbstorage should match the stick")
	// Claiming the interface detached the kernel's usb-storage, so the
	// stick's SCSI disk went away, as on a real machine: only the boot
	// disk is left for sg.
	require.Equal(t, 1, c["SCSIDevice"])
	require.Equal(t, 1, c["SCSIGenericBlock"])

	app := self(t, "app")
	app.Env = append(app.Env, "DRVCTL_SOCKET="+d.socket)
	appOut := &syncBuffer{}
	app.Stdout, app.Stderr = appOut, appOut
	require.NoError(t, app.Start())
	require.Eventually(t, func() bool { return strings.Contains(appOut.String(), "app: holding") },
		20*time.Second, 10*time.Millisecond, "app output: %s", appOut.String())
	require.Equal(t, 1, classes(d.inspect())["UserClient"])

	// Unloading while the application holds the device open: the driver is
	// asked to close, the application does not, so unload shows what blocks
	// and refuses with the holder report.
	out, err := d.ctl("unload", "usbstorage", "--timeout", "1s")
	require.Error(t, err)
	require.Contains(t, out, "waiting for usbstorage:")
	require.Contains(t, out, "open by UserClient")
	require.Contains(t, out, "classes have instances: USBMassStorage(1)")

	// The terminated driver is now a leak candidate: leaks names its holder,
	// and the pprof profile opens in go tool pprof.
	require.Contains(t, d.mustCtl("leaks"), "USBMassStorage")
	prof := filepath.Join(t.TempDir(), "leaks.pb.gz")
	d.mustCtl("leaks", "-o", "pprof", "-f", prof)
	top, err := exec.Command("go", "tool", "pprof", "-top", prof).CombinedOutput()
	require.NoError(t, err, "%s", top)
	require.Contains(t, string(top), "driver.(*Registry).AttachClient", "the leaked references were taken attaching the user client")

	// The application crashes: its user client must go, by itself, and the
	// termination that waited for its close completes.
	killed := time.Now()
	require.NoError(t, app.Process.Signal(syscall.SIGKILL))
	_ = app.Wait()
	require.Eventually(t, func() bool { return classes(d.inspect())["UserClient"] == 0 }, 5*time.Second, 5*time.Millisecond)
	// The figures include starting an inspect process per poll (slow under
	// -race); userclient's benchmarks measure the cleanup itself.
	t.Logf("SIGKILL → user client freed (as seen by inspect): %v", time.Since(killed))
	require.Eventually(t, func() bool { return classes(d.inspect())["USBMassStorage"] == 0 }, 5*time.Second, 5*time.Millisecond)
	t.Logf("SIGKILL → the driver it held open freed: %v", time.Since(killed))
	out = d.mustCtl("unload", "usbstorage")
	require.Contains(t, out, "unloaded usbstorage")
	// usbstorage let go: usb-storage is re-attached and the stick's disk is
	// back, now driven by sg.
	require.Eventually(t, func() bool {
		c := classes(d.inspect())
		return c["SCSIDevice"] == 2 && c["SCSIGenericBlock"] == 2
	}, 10*time.Second, 20*time.Millisecond, "the stick's disk should come back under usb-storage:\n%s", d.mustCtl("inspect"))

	d.mustCtl("sim", "unplug 2-1")
	c = classes(d.inspect())
	require.Zero(t, c["USBDevice"])
	require.Equal(t, 1, c["SCSIDevice"])
	require.Contains(t, d.mustCtl("leaks"), "no leaks: ")

	// Bad requests get errors and usage, and the daemon carries on.
	out, err = d.ctl("terminate", "424242")
	require.Error(t, err)
	require.Contains(t, out, "drvctl terminate: no service with ID 424242 (see drvctl inspect)")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, exitUsage, exit.ExitCode())
	out, err = d.ctl("sim", "unplug 9-9")
	require.Error(t, err)
	require.Contains(t, out, "9-9")
	require.Equal(t, 1, classes(d.inspect())["SCSIGenericBlock"], "the boot disk's sg driver is untouched:\n%s", d.mustCtl("inspect"))

	// SIGTERM: everything terminated in order, exit 0, nothing leaked.
	require.NoError(t, d.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, d.cmd.Wait(), "daemon log:\n%s", d.log.String())
	require.Contains(t, d.log.String(), "nothing leaked")
	_, err = os.Stat(d.socket)
	require.True(t, os.IsNotExist(err), "the socket file is removed at exit")

	_ = mon.Wait() // ends when the daemon goes
	events, err := lifecycletest.ReadMonitorJSON(strings.NewReader(monOut.String()[:strings.LastIndex(monOut.String(), "}")+1]))
	require.NoError(t, err)
	require.NotEmpty(t, events)
	require.NoError(t, lifecycletest.Validate(events, false))
}

func TestDaemonNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nobody.sock")
	e, _, errb := testEnv(nil, 0)
	require.Equal(t, exitFail, run([]string{"inspect", "--socket", sock}, e))
	require.Contains(t, errb.String(), "cannot reach the drvkit daemon at "+sock)
}

func TestBadCommandLines(t *testing.T) {
	leaktest.Check(t)
	// A daemon for the cases that name something it does not know.
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0\n"), 0o644))
	sock := filepath.Join(dir, "d.sock")
	d := startServe(t, serveOptions{socket: sock, sim: scn, drivers: "sg", logFormat: "text", logLevel: "warn",
		trace: "all", socketGroup: -1, termTimeout: 5 * time.Second, closeTimeout: 5 * time.Second})
	defer func() { require.NoError(t, d.stop(), "%s", d.log.Bytes()) }()

	tests := []struct {
		args    []string
		want    string
		noUsage bool // a well-formed command line naming something unknown: no usage text
	}{
		{args: []string{"inspect", "--bogus"}, want: "flag provided but not defined: -bogus"},
		{args: []string{"inspect", "-o", "yaml"}, want: `unknown output format "yaml"`},
		{args: []string{"inspect", "usbstorage", "sg"}, want: `inspect takes at most one service (ID, Class@name, name or device path), got ["usbstorage" "sg"]`},
		{args: []string{"inspect", "-d", "-1"}, want: `-d -1: want a depth of 1 or more (0: all)`},
		{args: []string{"monitor", "--kind", "udev"}, want: `unknown event kind "udev"`},
		{args: []string{"why"}, want: "want exactly one service ID"},
		{args: []string{"why", "abc"}, want: `"abc" is not a service ID`},
		{args: []string{"terminate", "1", "2"}, want: "want exactly one service ID"},
		{args: []string{"unload"}, want: "want exactly one driver name"},
		{args: []string{"sim"}, want: "want scenario steps"},
		{args: []string{"serve", "extra"}, want: "serve takes no arguments"},
		{args: []string{"serve", "--log-format", "xml", "--socket", "/nonexistent/x.sock"}, want: `log format "xml"`},
		{args: []string{"why", "999", "--socket", sock}, noUsage: true,
			want: "drvctl why: no service with ID 999 (see drvctl inspect)\n"},
		{args: []string{"terminate", "999", "--socket", sock}, noUsage: true,
			want: "drvctl terminate: no service with ID 999 (see drvctl inspect)\n"},
		{args: []string{"unload", "bogus", "--socket", sock}, noUsage: true,
			want: `drvctl unload: no driver "bogus" is loaded (loaded: sg)` + "\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			e, _, errb := testEnv(nil, 0)
			require.Equal(t, exitUsage, run(tt.args, e), errb.String())
			require.Contains(t, errb.String(), tt.want)
			if tt.noUsage {
				require.Equal(t, tt.want, errb.String(), "one line, no usage, no library prefixes")
			} else {
				require.Contains(t, errb.String(), "usage: drvctl")
			}
		})
	}

	// Unloading a driver twice: the second time it is no longer loaded.
	e, out, errb := testEnv(nil, 0)
	require.Equal(t, exitOK, run([]string{"unload", "sg", "--socket", sock}, e), errb.String())
	require.Contains(t, out.String(), "unloaded sg")
	e, _, errb = testEnv(nil, 0)
	require.Equal(t, exitUsage, run([]string{"unload", "sg", "--socket", sock}, e), errb.String())
	require.Equal(t, `drvctl unload: no driver "sg" is loaded (loaded: none)`+"\n", errb.String())
}

// openAsApp is the test binary as an application of uid nobody: it opens
// a service of the personality and says what it got, or the error as
// drvctl would print it.
func openAsApp(personality, socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := userclient.Dial(ctx, socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		return 1
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Personality: personality})
	if err != nil {
		fmt.Fprintln(os.Stderr, "app: open:", daemonAnswer(err))
		return 1
	}
	fmt.Println("opened", h.Service().Class)
	return 0
}

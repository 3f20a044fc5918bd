package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/metrics/metricstest"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// simOptions are serve's options for a daemon on a simulated bus with a
// boot disk, with --http on a free loopback port.
func simOptions(t testing.TB) serveOptions {
	t.Helper()
	dir := t.TempDir()
	scn := filepath.Join(dir, "boot.scn")
	require.NoError(t, os.WriteFile(scn, []byte("scsi add 0:0:0:0 vendor=QEMU model=\"QEMU HARDDISK\"\n"), 0o644))
	return serveOptions{socket: filepath.Join(dir, "d.sock"), sim: scn, logFormat: "text", logLevel: "error",
		trace: "all", socketGroup: -1, termTimeout: 10 * time.Second, closeTimeout: 10 * time.Second,
		observe: observeOptions{addr: "127.0.0.1:0"}}
}

func httpBase(d *inProcessDaemon) string { return "http://" + d.observer.ln.Addr().String() }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scrapeMetrics reads /metrics as Prometheus does and parses it with the
// Prometheus text parser.
func scrapeMetrics(t *testing.T, base string) metricstest.Families {
	t.Helper()
	code, body := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code, body)
	fams, err := metricstest.Parse(strings.NewReader(body))
	require.NoError(t, err, "exposition:\n%s", body)
	return fams
}

// TestMetricsScriptedDaemon drives the daemon on a simulated bus through a
// plug, an open by a real application process, its SIGKILL, the unplug and
// an unload, scraping /metrics after each step.
func TestMetricsScriptedDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real application process")
	}
	leaktest.Check(t)
	o := simOptions(t)
	d := startServe(t, o)
	rec := lifecycletest.Record(t, d.reg) // from here on; the checker tolerates a partial start
	base := httpBase(d)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var f metricstest.Families
	require.Eventually(t, func() bool {
		f = scrapeMetrics(t, base)
		return f.Value("drvkit_services", "class=SCSIGenericBlock", "state=active") == 1
	}, 10*time.Second, 10*time.Millisecond, "the boot disk is driven by sg")
	noUevents := f.Has("drvkit_uevents_received_total")
	require.False(t, noUevents, "a simulated bus has no netlink socket to count")
	require.Equal(t, 1.0, f.Value("drvkit_build_info"))
	require.NotZero(t, f.Value("go_goroutines"), "Go runtime metrics")

	// Plug.
	require.NoError(t, d.inject(ctx, "plug usb 2-1 vid=46f4 pid=0001 serial=MET ifaces=08/06/50"))
	f = scrapeMetrics(t, base)
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=USBDevice", "state=active"))
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=USBMassStorage", "state=active"))
	require.Equal(t, 1.0, f.Value("drvkit_hotplug_start_latency_seconds", "class=USBMassStorage"), "uevent → Start observed")
	require.NotZero(t, f.Value("drvkit_hotplug_nubs_total", "action=published"))
	require.Zero(t, f.Value("drvkit_userclient_opens_total"))

	// Open, by a real application process.
	app := self(t, "app")
	app.Env = append(app.Env, "DRVCTL_SOCKET="+o.socket)
	appOut := &syncBuffer{}
	app.Stdout, app.Stderr = appOut, appOut
	require.NoError(t, app.Start())
	t.Cleanup(func() { _ = app.Process.Kill(); _ = app.Wait() })
	require.Eventually(t, func() bool { return strings.Contains(appOut.String(), "app: holding") },
		20*time.Second, 10*time.Millisecond, "app output: %s", appOut.String())
	f = scrapeMetrics(t, base)
	require.Equal(t, 1.0, f.Value("drvkit_userclient_opens_total"))
	require.Equal(t, 1.0, f.Value("drvkit_userclient_connections"))
	require.Equal(t, 1.0, f.Value("drvkit_userclient_sessions"))
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=UserClient", "state=active"))
	require.Zero(t, f.Value("drvkit_userclient_deaths_total"))

	// SIGKILL: the user client dies, by itself.
	require.NoError(t, app.Process.Signal(syscall.SIGKILL))
	_ = app.Wait()
	require.Eventually(t, func() bool {
		f = scrapeMetrics(t, base)
		// The server counts the death and drops the session as it
		// finishes with the connection, which may come after the free.
		return f.Value("drvkit_termination_duration_seconds", "class=UserClient") == 1 &&
			f.Value("drvkit_userclient_deaths_total") == 1 && f.Value("drvkit_userclient_sessions") == 0
	}, 10*time.Second, 10*time.Millisecond, "the killed application's user client is freed and its session counted dead")
	require.Equal(t, 1.0, f.Value("drvkit_userclient_deaths_total"))
	require.Equal(t, 1.0, f.Value("drvkit_terminations_total", "class=UserClient"))
	require.Zero(t, f.Value("drvkit_services", "class=UserClient"))
	require.Zero(t, f.Value("drvkit_userclient_sessions"))
	require.Eventually(t, func() bool { return scrapeMetrics(t, base).Value("drvkit_userclient_connections") == 0 },
		5*time.Second, 10*time.Millisecond)

	// Unplug: the stick's nubs and its driver terminated and freed.
	require.NoError(t, d.inject(ctx, "unplug 2-1"))
	require.NoError(t, d.reg.WaitQuiet(ctx))
	f = scrapeMetrics(t, base)
	require.Zero(t, f.Value("drvkit_services", "class=USBDevice"))
	require.Zero(t, f.Value("drvkit_services", "class=USBMassStorage"))
	require.Equal(t, 1.0, f.Value("drvkit_terminations_total", "class=USBDevice", "cause=unplug"))
	require.Equal(t, 1.0, f.Value("drvkit_terminations_total", "class=USBMassStorage", "cause=unplug"), "cascaded: counted under the unplug")
	require.Equal(t, 1.0, f.Value("drvkit_termination_duration_seconds", "class=USBMassStorage"))
	require.NotZero(t, f.Value("drvkit_hotplug_nubs_total", "action=terminated"))
	require.Zero(t, f.Value("drvkit_refcount_live_objects", "class=USBDevice"))

	// Unload sg: the boot disk's driver goes, the disk stays.
	_, err := adminUnload(ctx, d.reg, unloadArgs{Driver: "sg"})
	require.NoError(t, err)
	f = scrapeMetrics(t, base)
	require.Zero(t, f.Value("drvkit_services", "class=SCSIGenericBlock"))
	require.Equal(t, 1.0, f.Value("drvkit_services", "class=SCSIDevice", "state=active"))
	require.GreaterOrEqual(t, f.Value("drvkit_terminations_total", "class=SCSIGenericBlock", "cause=unload"), 1.0)
	require.Equal(t, f.Value("drvkit_lifecycle_steps_total", "step=terminate"), f.Value("drvkit_lifecycle_steps_total", "step=free"),
		"every terminated service was freed")

	require.NoError(t, d.stop())
	rec.CheckPartial(t)
}

func TestHTTPListenRefusals(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name        string
		addr        string
		allowRemote bool
		usage       bool   // refused as a command-line error
		want        string // in the error; "" for success
	}{
		{"loopback v4", "127.0.0.1:0", false, false, ""},
		{"loopback range", "127.0.0.2:0", false, false, ""},
		{"localhost", "localhost:0", false, false, ""},
		{"every interface", "0.0.0.0:0", false, true, "not a loopback address"},
		{"empty host", ":0", false, true, "every interface"},
		{"v6 any", "[::]:0", false, true, "not a loopback address"},
		{"remote address", "192.0.2.1:9464", false, true, "pass --http-allow-remote"},
		{"no port", "127.0.0.1", false, true, "want host:port"},
		{"every interface allowed", "0.0.0.0:0", true, false, ""},
		{"unix socket", filepath.Join(dir, "h.sock"), false, false, ""},
		{"unix: prefix", "unix:" + filepath.Join(dir, "h2.sock"), false, false, ""},
		{"unix: empty", "unix:", false, true, "needs a socket path"},
		{"not a socket", filepath.Join(dir, "file"), false, false, "is not a socket"},
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o644))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, path, err := listenHTTP(tt.addr, tt.allowRemote, -1)
			if tt.want == "" {
				require.NoError(t, err)
				if path != "" {
					fi, err := os.Stat(path)
					require.NoError(t, err)
					require.Equal(t, os.FileMode(0o660), fi.Mode().Perm())
					defer os.Remove(path)
				}
				require.NoError(t, ln.Close())
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
			var u *usageError
			require.Equal(t, tt.usage, errors.As(err, &u), "usage error: %v", err)
		})
	}
	// A live listener's socket is never taken over.
	p := filepath.Join(dir, "live.sock")
	ln, _, err := listenHTTP(p, false, -1)
	require.NoError(t, err)
	defer ln.Close()
	_, _, err = listenHTTP(p, false, -1)
	require.ErrorIs(t, err, syscall.EADDRINUSE)

	// The daemon refuses to start, and leaks nothing doing so.
	leaktest.Check(t)
	o := simOptions(t)
	o.observe.addr = "0.0.0.0:9464"
	err = serve(context.Background(), o, io.Discard, nil)
	var u *usageError
	require.ErrorAs(t, err, &u)
	require.Contains(t, err.Error(), "--http-allow-remote")
	o.observe = observeOptions{pprof: true}
	require.ErrorContains(t, serve(context.Background(), o, io.Discard, nil), "need --http")
}

// TestHTTPReadOnly: nothing on the listener changes anything — every
// method but GET and HEAD is refused, no write verb exists — a browser
// page from another origin cannot reach it through DNS rebinding, and
// pprof is there only when asked for.
func TestHTTPReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon")
	}
	leaktest.Check(t)
	d := startServe(t, simOptions(t))
	base := httpBase(d)
	for _, path := range []string{"/", "/metrics", "/api/tree", "/api/services/1", "/api/leaks", "/api/events", "/debug/pprof/"} {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			req, err := http.NewRequest(method, base+path, strings.NewReader("{}"))
			require.NoError(t, err)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "%s %s", method, path)
			require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"))
		}
	}
	for _, path := range []string{"/api/terminate", "/api/unload", "/api/services/1/terminate", "/api/sim", "/debug/pprof/"} {
		code, _ := get(t, base+path)
		require.Equal(t, http.StatusNotFound, code, path)
	}
	code, body := get(t, base+"/api/services/notanumber")
	require.Equal(t, http.StatusBadRequest, code, body)
	code, _ = get(t, base+"/api/services/424242")
	require.Equal(t, http.StatusNotFound, code)

	req, err := http.NewRequest(http.MethodGet, base+"/api/tree", nil)
	require.NoError(t, err)
	req.Host = "attacker.example:80"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "a foreign Host header is refused")

	// Every service is still there: nothing above touched the registry.
	require.Eventually(t, func() bool {
		code, body = get(t, base+"/api/tree")
		return code == http.StatusOK && strings.Contains(body, `"class":"SCSIGenericBlock"`)
	}, 10*time.Second, 10*time.Millisecond, "the boot disk and its driver are there")
	require.NoError(t, d.stop())

	// With --http-pprof the profiler answers.
	o := simOptions(t)
	o.observe.pprof = true
	d = startServe(t, o)
	code, body = get(t, httpBase(d)+"/debug/pprof/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "goroutine")
	require.NoError(t, d.stop())
}

// TestHTTPOnUnixSocket serves the same on a Unix socket (mode 0660).
func TestHTTPOnUnixSocket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon")
	}
	leaktest.Check(t)
	o := simOptions(t)
	sock := filepath.Join(filepath.Dir(o.socket), "http.sock")
	o.observe.addr = "unix:" + sock
	d := startServe(t, o)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://drvkit/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), "drvkit_services{")
	require.NoError(t, d.stop())
	_, err = os.Stat(sock)
	require.True(t, os.IsNotExist(err), "the socket file is removed at exit")
	fmt.Fprint(io.Discard, d.log.String())
}

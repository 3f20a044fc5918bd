package host_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/bundle"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidkbd"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
	"github.com/drvkit/drvkit/driver/host"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// env is a daemon in miniature: a registry, the host, a user-client
// socket; finish checks that nothing is left (objects, goroutines,
// descriptors, child processes) and that the trace is valid.
type env struct {
	t    *testing.T
	ctx  context.Context
	r    *driver.Registry
	h    *host.Host
	rec  *lifecycletest.Recorder
	srv  *server.Server
	dir  string
	logs *syncBuffer
	fds  int
	hid  *hidsim.Backend // the daemon's HID devices: devgrant grants their nodes
	n    int
	// disabled lists the drivers the host's Disabled hook was called for.
	disabled syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, configure ...func(*host.Config)) *env {
	leaktest.Check(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, dir: t.TempDir(), logs: &syncBuffer{}, fds: countFDs(t)}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.r = driver.NewRegistry(driver.WithLogger(log))
	e.rec = lifecycletest.Record(t, e.r)
	e.hid = hidsim.New()
	res := drivertable.NewResources()
	drivertable.Provide(res, hidkbd.BackendKey, func() (hid.Backend, error) { return e.hid, nil })
	cfg := host.Config{Registry: e.r, Log: log, Resources: res, Disabled: func(name string) { e.disabled.Write([]byte(name + "\n")) }}
	for _, f := range configure {
		f(&cfg)
	}
	e.h = host.New(cfg)
	srv, err := server.Listen(server.NewRegistryBackend(e.r), server.Config{
		Path: filepath.Join(e.dir, "drvkit.sock"), GID: -1,
		Policy: server.Policy{Rules: []server.Rule{{AnyUser: true, Classes: []string{counter.Class}}}},
	})
	require.NoError(t, err)
	e.srv = srv
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.logs.String())
		}
	})
	return e
}

// finish closes everything and checks what is left.
func (e *env) finish() {
	t := e.t
	require.NoError(t, e.srv.Close())
	require.NoError(t, e.r.Close(e.ctx))
	e.h.Close()
	e.rec.Check(t)
	noChildren(t)
	require.Eventually(t, func() bool { return countFDs(t) <= e.fds }, 5*time.Second, 10*time.Millisecond,
		"descriptors: %d before, %d after", e.fds, countFDs(t))
}

// manifest writes a bundle of the test driver in mode, with the manifest
// text extra appended (tables), and loads it.
func (e *env) manifest(mode, runExtra, extra string) *bundle.Manifest {
	return e.manifestFull(e.t, mode, runExtra, extra)
}

func (e *env) manifestText(t testing.TB, mode string) *bundle.Manifest {
	return e.manifestFull(t, mode, "", "")
}

func (e *env) manifestFull(t testing.TB, mode, runExtra, extra string) *bundle.Manifest {
	text := `name = "gocounter"
version = "1.0"
[run]
executable = "` + testExe + `"
args = ["` + driverArg + `", "` + mode + `"]
user = "65534"
` + runExtra + `
[restart]
max_crashes = 3
window = "1m"
backoff = "50ms"
max_backoff = "200ms"
[[personality]]
provider_class = "HIDDevice"
class = "Counter"
match.vid = 0x1209
match.pid = 0x0001
[[method]]
name = "count"
[[method]]
name = "echo"
max_input = 16
max_output = 16
[[method]]
name = "notify"
[[method]]
name = "wait"
` + extra
	p := filepath.Join(e.dir, mode+".toml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	m, err := bundle.Load(p, bundle.Options{})
	require.NoError(t, err)
	return m
}

// load registers the entry's personalities.
func (e *env) load(ent drivertable.Entry) {
	ps, err := ent.Defaults(drivertable.NewResources())
	require.NoError(e.t, err)
	for _, p := range ps {
		require.NoError(e.t, e.r.RegisterPersonality(p))
	}
}

// loadBundle loads the test driver in mode out of process.
func (e *env) loadBundle(mode, runExtra string) *bundle.Manifest {
	m := e.manifest(mode, runExtra, "")
	e.load(e.h.Entry(m))
	return m
}

// plug publishes a HID nub the counter matches, with a simulated device
// behind its hidraw node (which devgrant grants the driver process).
func (e *env) plug(name string) *driver.Service {
	e.n++
	node := fmt.Sprintf("/dev/hidraw%d", e.n)
	e.hid.Plug(node, hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: counter.VendorID, Product: counter.ProductID}})
	nub := e.r.NewNub("HIDDevice", name, driver.NewProperties(map[string]any{
		"idVendor": uint64(counter.VendorID), "idProduct": uint64(counter.ProductID), "start": 10, "hidraw": node}))
	require.NoError(e.t, e.r.Publish(nil, nub))
	return nub
}

// instance waits for the started Counter on nub.
func (e *env) instance(nub *driver.Service) *driver.Service {
	var inst *driver.Service
	require.Eventually(e.t, func() bool {
		inst = nil
		for _, c := range nub.Clients() {
			if st := c.State(); c.Class() == counter.Class && st.Active && st.Started {
				inst = c
			}
		}
		return inst != nil
	}, 20*time.Second, 5*time.Millisecond, "no started instance on %s", nub)
	return inst
}

func (e *env) dial(opts ...userclient.DialOption) *userclient.Client {
	c, err := userclient.Dial(e.ctx, e.srv.Addr(), opts...)
	require.NoError(e.t, err)
	return c
}

func (e *env) status(name string) host.Status {
	st, ok := e.h.Status(name)
	require.True(e.t, ok)
	return st
}

// pid waits for the bundle to have exactly one live process.
func (e *env) pid(name string) int {
	var pid int
	require.Eventually(e.t, func() bool {
		st := e.status(name)
		if len(st.PIDs) == 1 {
			pid = st.PIDs[0]
		}
		return len(st.PIDs) == 1
	}, 20*time.Second, 5*time.Millisecond)
	return pid
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// children lists the processes whose parent is this one (zombies too).
func children(t testing.TB) []string {
	ents, err := os.ReadDir("/proc")
	require.NoError(t, err)
	me := strconv.Itoa(os.Getpid())
	var out []string
	for _, d := range ents {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces, so split after ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 2 && f[1] == me {
			out = append(out, d.Name()+" state "+f[0])
		}
	}
	return out
}

func noChildren(t testing.TB) {
	require.Eventually(t, func() bool { return len(children(t)) == 0 }, 5*time.Second, 10*time.Millisecond,
		"child processes left: %v", children(t))
}

// procStatus reads a field of /proc/pid/status.
func procStatus(t testing.TB, pid int, field string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// nextNotification waits for a notification of type typ.
func nextNotification(t testing.TB, h *userclient.Handle, typ userclient.NotificationType) userclient.Notification {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n, ok := <-h.Notifications():
			require.True(t, ok, "notifications ended before %s", typ)
			if n.Type == typ {
				return n
			}
		case <-timeout:
			t.Fatalf("no %s", typ)
		}
	}
}

var ctxDeadline = context.DeadlineExceeded

func contextWithTimeout(e *env, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, d)
}

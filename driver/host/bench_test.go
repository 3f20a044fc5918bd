package host_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
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
	"github.com/drvkit/drvkit/driver/host/wire"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/userclient"
	"github.com/drvkit/drvkit/userclient/server"
)

// benchEnv is env for benchmarks: no leak check per iteration, quiet.
type benchEnv struct {
	b   *testing.B
	ctx context.Context
	r   *driver.Registry
	h   *host.Host
	dir string
	hid *hidsim.Backend
}

func newBenchEnv(b *testing.B) *benchEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	b.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	e := &benchEnv{b: b, ctx: ctx, r: driver.NewRegistry(driver.WithLogger(log)), dir: b.TempDir()}
	e.hid = hidsim.New()
	res := drivertable.NewResources()
	drivertable.Provide(res, hidkbd.BackendKey, func() (hid.Backend, error) { return e.hid, nil })
	e.h = host.New(host.Config{Registry: e.r, Log: log, Resources: res})
	b.Cleanup(func() {
		require.NoError(b, e.r.Close(context.Background()))
		e.h.Close()
	})
	return e
}

// loadBundle loads the counter out of process: the gocounter sample built
// as a bundle executable (as users ship it), or the test binary if the go
// tool is not at hand.
func (e *benchEnv) loadBundle() *bundle.Manifest {
	env := &env{t: nil, dir: e.dir}
	m := env.manifestText(e.b, "counter")
	if exe := buildSample(e.b); exe != "" {
		m.Executable, m.Args = exe, nil
	}
	ent := e.h.Entry(m)
	ps, err := ent.Defaults(drivertable.NewResources())
	require.NoError(e.b, err)
	for _, p := range ps {
		require.NoError(e.b, e.r.RegisterPersonality(p))
	}
	return m
}

func (e *benchEnv) nub(name string, product uint64) *driver.Service {
	node := "/dev/hidraw-" + name
	e.hid.Plug(node, hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: counter.VendorID, Product: uint16(product)}})
	return e.r.NewNub("HIDDevice", name, driver.NewProperties(map[string]any{
		"idVendor": uint64(counter.VendorID), "idProduct": product, "hidraw": node}))
}

var (
	sampleOnce sync.Once
	sampleExe  string
)

// benchCounterEnv names a gocounter executable for the benchmarks to run
// instead of building one: to compare SDK versions in the same run of
// the daemon's side (build the old one from another checkout).
const benchCounterEnv = "DRVKIT_BENCH_COUNTER"

// buildSample builds examples/bundles/gocounter once per run, where the
// drivers' user may run it, unless benchCounterEnv names one.
func buildSample(b *testing.B) string {
	sampleOnce.Do(func() {
		if exe := os.Getenv(benchCounterEnv); exe != "" {
			sampleExe = exe
			return
		}
		gotool, err := exec.LookPath("go")
		if err != nil {
			b.Logf("no go tool: the benchmark runs the test binary as its driver")
			return
		}
		dir := filepath.Dir(testExe) // readable by the drivers' user, removed at the end
		out := filepath.Join(dir, "gocounter")
		cmd := exec.Command(gotool, "build", "-o", out, "../../examples/bundles/gocounter")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Logf("building the sample: %v\n%s", err, msg)
			return
		}
		sampleExe = out
	})
	return sampleExe
}

func started(nub *driver.Service) *driver.Service {
	for _, c := range nub.Clients() {
		if st := c.State(); st.Active && st.Started {
			return c
		}
	}
	return nil
}

// BenchmarkStartOutOfProcess: from a nub's publication to its out-of-process
// driver's Start returned (matching, device grant, process spawn, handshake,
// start), one instance at a time; p50 and p99 over the iterations.
func BenchmarkStartOutOfProcess(b *testing.B) {
	e := newBenchEnv(b)
	e.loadBundle()
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		nub := e.nub(fmt.Sprint("n", i), counter.ProductID)
		begin := time.Now()
		require.NoError(b, e.r.Publish(nil, nub))
		lat = append(lat, time.Since(begin))
		b.StopTimer()
		require.NotNil(b, started(nub), "the driver did not start")
		require.NoError(b, nub.TerminateSyncWith(e.ctx, driver.CauseUnplug))
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}

// floorChunk is how many calls BenchmarkCall makes on one path before it
// switches to the next: short enough that every path sees the same
// machine (load from other processes comes and goes in milliseconds),
// long enough that each runs in its steady state.
const floorChunk = 32

// BenchmarkCall: a client method (echo, 16 bytes) through a real
// user-client connection, to the same driver in process and out of
// process, interleaved in chunks in the same run with a floor: a plain
// cross-process echo of the call's protocol message over a socketpair
// with a child process (the test binary in echo mode: Go on both sides,
// no SDK, no registry).
//
// app=process is what an application sees: the application is a process
// of its own (the test binary in app mode), as every application of the
// daemon is. app=daemon runs the application in the daemon's process, so
// that the in-process call crosses no process boundary at all — a bound
// no real application reaches, kept to watch the daemon's own cost.
//
// Metrics:
//   - oop/inproc: the figure (goal ≤ 2);
//   - echo-ns/rt: one cross-process round trip, what the kernel and Go's
//     runtime cost at least;
//   - x-floor: (oop − inproc) / echo, what the process boundary costs us
//     in round trips of the floor (1 is physics).
//
// traced is what drvctl serve runs by default (the package's TestMain
// traces every object); untraced, an embedding application's default.
func BenchmarkCall(b *testing.B) {
	for _, app := range []string{"process", "daemon"} {
		b.Run("traced/app="+app, func(b *testing.B) { benchCall(b, app == "process") })
		b.Run("untraced/app="+app, func(b *testing.B) {
			// Objects made from here on take the one-atomic path.
			b.Setenv(refcount.EnvVar, "off")
			refcount.TraceOff()
			b.Cleanup(refcount.TraceAll)
			benchCall(b, app == "process")
		})
	}
}

// callPaths times n calls on the in-process and n on the out-of-process
// driver.
type callPaths interface {
	chunk(b *testing.B, n int) (in, out, via time.Duration)
}

func benchCall(b *testing.B, appProcess bool) {
	msg := []byte("0123456789abcdef")
	req, err := wire.Encode(&wire.Message{Type: wire.TypeCall, ID: 1000, Method: "echo", Data: msg}, 0)
	require.NoError(b, err)
	floor := newEchoFloor(b, req)
	e := newBenchEnv(b)
	e.loadBundle()
	in := counter.Entry
	in.Personalities = func(r *drivertable.Resources) ([]driver.Personality, error) {
		ps, err := counter.Entry.Personalities(r)
		for i := range ps {
			ps[i].Name, ps[i].Class = "inproc", "CounterInProcess"
			ps[i].Match = []driver.Match{driver.MatchValue("idProduct", 2)}
		}
		return ps, err
	}
	ps, err := in.Defaults(drivertable.NewResources())
	require.NoError(b, err)
	require.NoError(b, e.r.RegisterPersonality(ps[0]))
	oopNub, inNub := e.nub("oop", counter.ProductID), e.nub("in", 2)
	require.NoError(b, e.r.Publish(nil, oopNub))
	require.NoError(b, e.r.Publish(nil, inNub))
	require.NotNil(b, started(oopNub))
	require.NotNil(b, started(inNub))

	srv, err := server.Listen(server.NewRegistryBackend(e.r), server.Config{Path: filepath.Join(e.dir, "s"), GID: -1,
		Policy: server.Policy{Rules: []server.Rule{{AnyUser: true, Classes: []string{counter.Class, "CounterInProcess"}}}}})
	require.NoError(b, err)
	defer srv.Close()
	var paths callPaths
	if appProcess {
		paths = startBenchApp(b, srv.Addr())
	} else {
		paths = dialPaths(b, e.ctx, srv.Addr())
	}
	for range 4 { // warm every path up
		floor.roundTrip(b)
		paths.chunk(b, 25)
	}
	var tIn, tOut, tVia, tFloor time.Duration
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(floorChunk, b.N-done)
		dIn, dOut, dVia := paths.chunk(b, n)
		t0 := time.Now()
		for range n {
			floor.roundTrip(b)
		}
		tIn += dIn
		tOut += dOut
		tVia += dVia
		tFloor += time.Since(t0)
		done += n
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(tIn.Nanoseconds())/n, "inproc-ns/call")
	b.ReportMetric(float64(tOut.Nanoseconds())/n, "oop-ns/call")
	b.ReportMetric(float64(tFloor.Nanoseconds())/n, "echo-ns/rt")
	b.ReportMetric(float64(tOut)/float64(tIn), "oop/inproc")
	b.ReportMetric(float64(tOut-tIn)/float64(tFloor), "x-floor")
	b.ReportMetric(float64(tVia)/float64(tIn), "via-daemon/inproc")
}

// handlePaths: the application's handles: in, the in-process driver; out,
// the out-of-process one (on a direct call channel); via, the same
// out-of-process driver with every call through the daemon.
type handlePaths struct {
	ctx          context.Context
	c, cVia      *userclient.Client
	in, out, via *userclient.Handle
	msg          []byte
}

func openPaths(ctx context.Context, addr string) (*handlePaths, error) {
	p := &handlePaths{ctx: ctx, msg: []byte("0123456789abcdef")}
	var err error
	if p.c, err = userclient.Dial(ctx, addr); err != nil {
		return nil, err
	}
	if p.cVia, err = userclient.Dial(ctx, addr, userclient.WithoutDirectCalls()); err != nil {
		return nil, err
	}
	if p.out, err = p.c.Open(ctx, userclient.Match{Class: counter.Class}); err != nil {
		return nil, err
	}
	if !p.out.Direct() {
		return nil, errors.New("the out-of-process handle has no direct call channel")
	}
	if p.in, err = p.c.Open(ctx, userclient.Match{Class: "CounterInProcess"}); err != nil {
		return nil, err
	}
	if p.via, err = p.cVia.Open(ctx, userclient.Match{Class: counter.Class}); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *handlePaths) close() error {
	return errors.Join(p.out.Close(), p.in.Close(), p.via.Close(), p.c.Close(), p.cVia.Close())
}

func dialPaths(b *testing.B, ctx context.Context, addr string) *handlePaths {
	p, err := openPaths(ctx, addr)
	require.NoError(b, err)
	b.Cleanup(func() { require.NoError(b, p.close()) })
	return p
}

func (p *handlePaths) chunk(b *testing.B, n int) (in, out, via time.Duration) {
	in, out, via, err := p.run(n)
	if err != nil {
		b.Fatal(err)
	}
	return in, out, via
}

func (p *handlePaths) run(n int) (in, out, via time.Duration, err error) {
	var d [3]time.Duration
	for i, h := range []*userclient.Handle{p.in, p.out, p.via} {
		t0 := time.Now()
		for range n {
			if _, err := h.Call(p.ctx, "echo", p.msg); err != nil {
				return 0, 0, 0, err
			}
		}
		d[i] = time.Since(t0)
	}
	return d[0], d[1], d[2], nil
}

// appPaths: the application in a process of its own, told over its
// standard input how many calls to make and answering with the times.
type appPaths struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startBenchApp(b *testing.B, addr string) *appPaths {
	cmd := exec.Command(testExe, driverArg, "app", addr)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	a := &appPaths{cmd: cmd, in: stdin, out: bufio.NewReader(stdout)}
	b.Cleanup(func() {
		a.in.Close() // the application closes its handles and exits
		require.NoError(b, a.cmd.Wait())
	})
	return a
}

func (a *appPaths) chunk(b *testing.B, n int) (in, out, via time.Duration) {
	if _, err := fmt.Fprintln(a.in, n); err != nil {
		b.Fatal(err)
	}
	line, err := a.out.ReadString('\n')
	if err != nil {
		b.Fatalf("the application process: %v", err)
	}
	if _, err := fmt.Sscan(line, &in, &out, &via); err != nil {
		b.Fatalf("the application process said %q", line)
	}
	return in, out, via
}

// benchApp is the application process of BenchmarkCall: for each count
// read from its standard input it makes that many calls on each path and
// writes the two durations; at the end of its input it closes and exits.
func benchApp(addr string) {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "bench application:", err)
		os.Exit(7)
	}
	p, err := openPaths(ctx, addr)
	if err != nil {
		fail(err)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		n, err := strconv.Atoi(sc.Text())
		if err != nil {
			fail(err)
		}
		in, out, via, err := p.run(n)
		if err != nil {
			fail(err)
		}
		fmt.Println(int64(in), int64(out), int64(via))
	}
	if err := p.close(); err != nil {
		fail(err)
	}
	os.Exit(0)
}

// BenchmarkMemoryPerInstance: the daemon's memory (heap and goroutine
// stacks, after a collection) per out-of-process instance with 100 of them
// running; the drivers' own processes are not counted.
func BenchmarkMemoryPerInstance(b *testing.B) {
	const n = 100
	for i := 0; i < b.N; i++ {
		e := newBenchEnv(b)
		e.loadBundle()
		nubs := make([]*driver.Service, n)
		for j := range nubs {
			nubs[j] = e.nub(fmt.Sprint("m", j), counter.ProductID)
		}
		before := daemonMemory()
		for _, nub := range nubs {
			require.NoError(b, e.r.Publish(nil, nub))
		}
		after := daemonMemory()
		for _, nub := range nubs {
			require.NotNil(b, started(nub))
		}
		b.ReportMetric(float64(after-before)/n/1024, "KiB/instance")
		for _, nub := range nubs {
			nub.TerminateWith(driver.CauseUnplug)
		}
		require.NoError(b, e.r.WaitQuiet(e.ctx))
	}
}

func daemonMemory() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

package leaktest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/refcount"
)

func TestMain(m *testing.M) {
	startWorker()
	opts := []Option{IgnoreGoroutine("github.com/drvkit/drvkit/refcount/leaktest.startWorker.func1")}
	if os.Getenv(helperEnv) != "" {
		opts = append(opts, Timeout(100*time.Millisecond))
	}
	Main(m, opts...)
}

const helperEnv = "LEAKTEST_MAIN_HELPER"

// TestMainHelperLeaks leaks on purpose when run by TestMainFailsOnLeak.
func TestMainHelperLeaks(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestMainFailsOnLeak")
	}
	d := newDevice("MainLeak")
	d.TaggedRetain("global-cache")
}

func TestMainFailsOnLeak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the test binary again")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainHelperLeaks$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode())
	require.Contains(t, string(out), "leaktest: 1 object(s) still alive after all tests")
	require.Contains(t, string(out), `held by "global-cache" ×1`)
	require.Contains(t, string(out), "leaktest.TestMainHelperLeaks")
}

// fakeTB records failures and cleanups instead of failing the real test,
// so that a test can assert that Check fails the right test. Everything
// else goes to the real *testing.T it wraps.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	errors   []string
	cleanups []func()
}

// newFake wraps t; after, if not nil, runs once Check's cleanup has run,
// with the failures it recorded.
func newFake(t *testing.T, after func(failures string)) *fakeTB {
	f := &fakeTB{TB: t}
	if after != nil {
		t.Cleanup(func() { after(f.failures()) })
	}
	t.Cleanup(f.runCleanups) // runs Check's cleanup at the end of t
	return f
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	f.cleanups = append(f.cleanups, fn)
	f.mu.Unlock()
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func (f *fakeTB) failures() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.errors, "\n")
}

type device struct {
	refcount.Object
}

func newDevice(class string) *device {
	d := &device{}
	d.Init(class, nil)
	return d
}

// worker is a goroutine started by TestMain, not by any test: objects it
// creates can only be attributed by time window.
var workCh = make(chan func())

func startWorker() {
	go func() {
		for f := range workCh {
			f()
		}
	}()
}

func onWorker(f func()) {
	done := make(chan struct{})
	workCh <- func() { f(); close(done) }
	<-done
}

func TestCleanTestPasses(t *testing.T) {
	f := newFake(t, func(msg string) { require.Empty(t, msg) })
	Check(f, Timeout(2*time.Second))
	d := newDevice("CleanDev")
	d.TaggedRetain("job")
	// Released asynchronously by a worker after the test body returns: the
	// retry window must absorb it.
	go func() {
		time.Sleep(100 * time.Millisecond)
		d.TaggedRelease("job")
		d.Release()
	}()
}

func TestLeakedObjectFailsWithReport(t *testing.T) {
	var d *device
	f := newFake(t, func(msg string) {
		require.Contains(t, msg, "1 object(s) created by "+t.Name()+" still alive")
		require.Contains(t, msg, "LeakDev#")
		require.Contains(t, msg, `held by "client:1" ×1`)
		require.Contains(t, msg, "leaktest.TestLeakedObjectFailsWithReport")
		require.Contains(t, msg, `why alive: "client:1" → LeakDev#`)
		d.TaggedRelease("client:1")
		d.Release()
	})
	Check(f, Timeout(200*time.Millisecond), ObjectsOnly())
	d = newDevice("LeakDev")
	d.TaggedRetain("client:1")
}

func TestGoroutineLeakNonParallel(t *testing.T) {
	stop := make(chan struct{})
	f := newFake(t, func(msg string) {
		require.Contains(t, msg, "goroutines started by "+t.Name()+" still running")
		require.Contains(t, msg, "TestGoroutineLeakNonParallel.func")
		close(stop)
	})
	Check(f, Timeout(200*time.Millisecond))
	go func() { <-stop }()
}

func TestTimeWindowFallback(t *testing.T) {
	var d *device
	f := newFake(t, func(msg string) {
		require.Contains(t, msg, "WorkerDev#")
		require.Contains(t, msg, "attributed to "+t.Name()+" by time window")
		d.Release()
	})
	Check(f, Timeout(200*time.Millisecond), ObjectsOnly())
	onWorker(func() { d = newDevice("WorkerDev") })
}

// Two parallel tests overlap in time; only one leaks an object (created in
// a goroutine it started) and a goroutine. Only that one fails.
func TestParallelIsolation(t *testing.T) {
	var leaky, clean *fakeTB
	var leaked *device
	stop := make(chan struct{})
	var ready sync.WaitGroup
	ready.Add(2)
	t.Run("group", func(t *testing.T) {
		t.Run("leaky", func(t *testing.T) {
			t.Parallel()
			leaky = newFake(t, nil)
			Check(leaky, Timeout(300*time.Millisecond))
			require.True(t, isParallel(leaky))
			ready.Done()
			ready.Wait() // both tests are checked and running
			done := make(chan struct{})
			go func() {
				leaked = newDevice("ParLeak")
				leaked.TaggedRetain("forgotten")
				close(done)
				<-stop // a goroutine the test forgets
			}()
			<-done
		})
		t.Run("clean", func(t *testing.T) {
			clean = newFake(t, nil)
			Check(clean, Timeout(300*time.Millisecond)) // before t.Parallel: also fine
			t.Parallel()
			ready.Done()
			ready.Wait()
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d := newDevice("ParClean")
					d.Retain()
					go func() { // released later, on another goroutine
						time.Sleep(50 * time.Millisecond)
						d.Release()
						d.Release()
					}()
				}()
			}
			wg.Wait()
		})
	})
	require.Empty(t, clean.failures(), "the clean test must not see the other's leak")
	msg := leaky.failures()
	require.Contains(t, msg, "1 object(s) created by "+t.Name()+"/group/leaky still alive")
	require.Contains(t, msg, "ParLeak#")
	require.NotContains(t, msg, "ParClean")
	require.NotContains(t, msg, "time window", "attributed by goroutine ancestry")
	require.Contains(t, msg, "1 goroutine(s) started by "+t.Name()+"/group/leaky still running")
	close(stop)
	leaked.TaggedRelease("forgotten")
	leaked.Release()
}

func TestCheckReportsCycles(t *testing.T) {
	var a, b *device
	f := newFake(t, func(msg string) {
		require.Contains(t, msg, "cycles (held only by each other):")
		require.Contains(t, msg, a.String()+" → "+b.String()+" → "+a.String())
		a.TaggedRelease(b)
		b.TaggedRelease(a)
	})
	Check(f, Timeout(100*time.Millisecond), ObjectsOnly())
	a, b = newDevice("CycA"), newDevice("CycB")
	a.TaggedRetain(b)
	b.TaggedRetain(a)
	a.Release()
	b.Release()
}

func TestIsParallelOnRealT(t *testing.T) {
	require.False(t, isParallel(t))
	t.Run("p", func(t *testing.T) {
		t.Parallel()
		require.True(t, isParallel(t))
	})
}

// Check on the real test: this test must pass cleanly.
func TestCheckOnRealT(t *testing.T) {
	Check(t)
	d := newDevice("RealT")
	d.Retain()
	d.Release()
	d.Release()
}

// TestOriginOnlyWhileChecking: learning an object's creating goroutine
// costs a runtime.Stack, so it happens only while a check could use it —
// a daemon running no leak check never pays.
func TestOriginOnlyWhileChecking(t *testing.T) {
	ensureTracing()
	var outside refcount.Object
	outside.Init("OriginOutside", nil)
	g, _ := outside.Goroutine()
	require.Zero(t, g, "no check runs: the origin is not learned")
	outside.Release()

	t.Run("checked", func(t *testing.T) {
		Check(t)
		var inside refcount.Object
		inside.Init("OriginInside", nil)
		g, _ := inside.Goroutine()
		require.NotZero(t, g, "a check runs: the origin is learned")
		inside.Release()
	})
	var after refcount.Object
	after.Init("OriginAfter", nil)
	g, _ = after.Goroutine()
	require.Zero(t, g, "the check ended: origins are no longer learned")
	after.Release()
}

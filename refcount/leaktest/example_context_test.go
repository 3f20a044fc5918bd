package leaktest_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// fixture is a shared test fixture, as a TestMain builds one: a worker
// goroutine that makes devices for whichever test asks. No test started
// it, so its objects cannot be attributed by goroutine.
type fixture struct {
	reqs chan request
	done chan struct{}
}

type request struct {
	ctx   context.Context
	reply chan *disk
}

func startFixture() *fixture {
	f := &fixture{reqs: make(chan request), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for req := range f.reqs {
			// The work is done on behalf of the context's test.
			refcount.Do(req.ctx, func() {
				d := newDisk("sdb")
				openDisk(d, "client:camera-app") // the leak
				d.Release()
				req.reply <- d
			})
		}
	}()
	return f
}

func (f *fixture) plug(ctx context.Context) *disk {
	reply := make(chan *disk)
	f.reqs <- request{ctx, reply}
	return <-reply
}

func (f *fixture) stop() {
	close(f.reqs)
	<-f.done
}

var reGoroutine = regexp.MustCompile(`goroutine \d+`)

// A test asks the shared fixture for a device with leaktest.Context(t):
// what the fixture's goroutine creates for it carries the test's label,
// and Check holds that test — and no other one running meanwhile —
// responsible for the leak.
func ExampleContext() {
	fx := startFixture()
	defer fx.stop()

	var b strings.Builder
	var leaked *disk
	test := func(t testing.TB) {
		leaktest.Check(t, leaktest.Timeout(10*time.Millisecond), leaktest.ObjectsOnly())
		leaked = fx.plug(leaktest.Context(t))
	}
	// The test runs on its own goroutine, as under go test.
	t := &printingTB{name: "TestPlugCamera", out: &b}
	done := make(chan struct{})
	go func() {
		defer close(done)
		test(t)
		t.finish()
	}()
	<-done
	leaked.TaggedRelease("client:camera-app")

	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "leaktest:") || strings.Contains(l, "by its label") || strings.Contains(l, "retained at") {
			fmt.Println(reGoroutine.ReplaceAllString(strings.TrimSpace(l), "goroutine N"))
		}
	}
	// Output:
	// leaktest: 1 object(s) attributed to TestPlugCamera still alive after 10ms:
	// note: Disk#N attributed to TestPlugCamera by its label (made by goroutine N, for the test)
	// 1 reference(s) on 1 object(s) [Disk] retained at leaktest_test.openDisk example_test.go:N
	// 1× retained at leaktest_test.openDisk example_test.go:N
	// why alive: "client:camera-app" → Disk#N (root retained at leaktest_test.openDisk example_test.go:N)
}

// A test binary whose tests share a fixture builds it in Setup, once
// tracing is on, and tears it down in Teardown, before the final check:
// the check then sees what the tests left, not the fixture itself. The
// body is that of the package's TestMain(m *testing.M).
func ExampleMain() {
	var m *testing.M // TestMain's argument
	var fx *fixture
	leaktest.Main(m,
		leaktest.Setup(func() { fx = startFixture() }),
		leaktest.Teardown(func() { fx.stop() }))
}

package driver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// TestMain traces every reference, so that tag pairing is enforced on every
// path the tests take, and fails on leaked objects and goroutines.
func TestMain(m *testing.M) {
	refcount.TraceAll()
	leaktest.Main(m)
}

// quietLogger keeps expected panics and failures out of the test output.
func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type env struct {
	t   *testing.T
	r   *driver.Registry
	rec *lifecycletest.Recorder
	log *callLog
}

// nub publishes a nub of class TestNub named n0, matching no driver, for
// clients to attach to.
func (e *env) nub() *driver.Service {
	e.t.Helper()
	n := e.r.NewNub("TestNub", "n0", driver.NewProperties(nil))
	require.NoError(e.t, e.r.Publish(nil, n))
	return n
}

// newEnv returns a registry with a recorder; at cleanup the registry is
// closed, every service must have been freed, the trace must satisfy the
// contract and no goroutine may be left.
func newEnv(t *testing.T, opts ...driver.Option) *env {
	t.Helper()
	leaktest.Check(t) // its cleanup runs last, after the registry is closed
	opts = append([]driver.Option{driver.WithLogger(quietLogger())}, opts...)
	r := driver.NewRegistry(opts...)
	e := &env{t: t, r: r, rec: lifecycletest.Record(t, r), log: &callLog{}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		require.Empty(t, r.Services(), "services left after Close")
		e.rec.Check(t)
	})
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// callLog records driver callbacks in order.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (l *callLog) add(format string, args ...any) {
	l.mu.Lock()
	l.calls = append(l.calls, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *callLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.calls...)
}

// lifecycle is get without the (asynchronous) message deliveries.
func (l *callLog) lifecycle() []string {
	var out []string
	for _, c := range l.get() {
		if !strings.HasPrefix(c, "message ") {
			out = append(out, c)
		}
	}
	return out
}

// testDriver is a configurable driver that logs every callback.
type testDriver struct {
	log      *callLog
	start    func(ctx context.Context, s *driver.Service) error
	stop     func(s *driver.Service)
	message  func(s *driver.Service, m driver.Message) error
	methods  map[string]driver.Method
	messages chan driver.Message
}

func (d *testDriver) Start(ctx context.Context, s *driver.Service) error {
	d.log.add("start %s", s.Name())
	if d.start != nil {
		return d.start(ctx, s)
	}
	return nil
}

func (d *testDriver) Stop(s *driver.Service) {
	d.log.add("stop %s", s.Name())
	if d.stop != nil {
		d.stop(s)
	}
}

func (d *testDriver) WillTerminate(s *driver.Service) { d.log.add("willTerminate %s", s.Name()) }
func (d *testDriver) DidTerminate(s *driver.Service)  { d.log.add("didTerminate %s", s.Name()) }

func (d *testDriver) Message(s *driver.Service, m driver.Message) error {
	d.log.add("message %s %s", s.Name(), m.Type)
	if d.messages != nil {
		d.messages <- m
	}
	if d.message != nil {
		return d.message(s, m)
	}
	return nil
}

func (d *testDriver) Methods() map[string]driver.Method { return d.methods }

var (
	_ driver.Driver         = (*testDriver)(nil)
	_ driver.WillTerminater = (*testDriver)(nil)
	_ driver.DidTerminater  = (*testDriver)(nil)
	_ driver.MessageHandler = (*testDriver)(nil)
	_ driver.ClientMethods  = (*testDriver)(nil)
)

// quiet waits for every termination to finish and checks the trace.
func (e *env) quiet() {
	e.t.Helper()
	require.NoError(e.t, e.r.WaitQuiet(ctxT(e.t)))
	e.rec.Check(e.t)
}

// waitFreed waits until every service is freed.
func waitFreed(t *testing.T, ss ...*driver.Service) {
	t.Helper()
	for _, s := range ss {
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not freed", s)
		}
	}
}

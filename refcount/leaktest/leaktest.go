package leaktest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/internal/ancestry"
)

// DefaultTimeout is how long a check waits for objects and goroutines to go
// away before it fails.
const DefaultTimeout = 5 * time.Second

// Option configures Check and Main.
type Option func(*config)

type config struct {
	timeout       time.Duration
	goleakOpts    []goleak.Option
	ignoreFuncs   []string
	ignoreClasses map[string]bool
	noGoroutines  bool
	setup         []func()
	teardown      []func()
}

// Timeout sets how long the check retries before failing (default 5s).
func Timeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// IgnoreGoroutine ignores goroutines with fn anywhere in their stack (a
// fully qualified function name, as in a stack trace).
func IgnoreGoroutine(fn string) Option {
	return func(c *config) {
		c.ignoreFuncs = append(c.ignoreFuncs, fn)
		c.goleakOpts = append(c.goleakOpts, goleak.IgnoreAnyFunction(fn))
	}
}

// IgnoreClass ignores live objects of the given classes.
func IgnoreClass(classes ...string) Option {
	return func(c *config) {
		if c.ignoreClasses == nil {
			c.ignoreClasses = map[string]bool{}
		}
		for _, cl := range classes {
			c.ignoreClasses[cl] = true
		}
	}
}

// ObjectsOnly skips the goroutine check.
func ObjectsOnly() Option { return func(c *config) { c.noGoroutines = true } }

// Setup runs f in Main before the tests, once tracing is on, so that a
// shared fixture (a registry, a hotplug bridge and simulator) is traced
// like everything else. Main only.
func Setup(f func()) Option { return func(c *config) { c.setup = append(c.setup, f) } }

// Teardown runs f in Main after the tests and before the final check, so
// that a shared fixture built in TestMain is gone when Main looks for what
// is left. Teardowns run in reverse order. Main only.
func Teardown(f func()) Option { return func(c *config) { c.teardown = append(c.teardown, f) } }

// Label is the attribution label of t: work done for t on goroutines that
// t did not start (a shared fixture's) is attributed to t when it runs
// under this label (see Context).
func Label(t testing.TB) string { return t.Name() }

// Context returns a context carrying t's attribution label
// (refcount.WithLabel). Give it to the fixture work done for t —
// sim.Sim.Inject (package hotplug/sim) carries it to the nubs and drivers the bridge creates;
// refcount.Do(ctx, f) labels anything else — and Check attributes what that
// work creates to t alone, not to every test running at the time.
func Context(t testing.TB) context.Context {
	return refcount.WithLabel(context.Background(), Label(t))
}

func newConfig(opts []Option) *config {
	c := &config{timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

// check is one Check in progress.
type check struct {
	tb       testing.TB
	name     string
	goid     uint64
	start    time.Time
	parallel bool
	cfg      *config
	ignore   goleak.Option // goroutines running when Check was called
}

var (
	checksMu sync.Mutex
	checks   = map[*check]bool{}
)

func ensureTracing() {
	if os.Getenv(refcount.EnvVar) == "" {
		refcount.TraceAll()
	}
}

// Check registers a cleanup on t that fails the test if objects it created
// are still alive, or goroutines it started still run, after a grace period
// (see Timeout). Call it at the start of the test, after t.Parallel().
func Check(t testing.TB, opts ...Option) {
	t.Helper()
	ensureTracing()
	// Objects record their creating goroutine only while a check runs.
	stopWanting := ancestry.Want()
	goid, _ := ancestry.Current()
	c := &check{tb: t, name: t.Name(), goid: goid, start: time.Now(), cfg: newConfig(opts)}
	if !c.cfg.noGoroutines && !isParallel(t) {
		// Taken now in case the test stays sequential; whether it is
		// parallel is final only at cleanup (t.Parallel may come later).
		c.ignore = goleak.IgnoreCurrent()
	}
	checksMu.Lock()
	checks[c] = true
	checksMu.Unlock()
	t.Cleanup(func() {
		c.parallel = isParallel(t) || c.ignore == nil
		defer func() {
			checksMu.Lock()
			delete(checks, c)
			checksMu.Unlock()
			stopWanting()
		}()
		if msg := c.verify(); msg != "" {
			t.Errorf("%s", msg)
		}
	})
}

// isParallel reports whether t (or the *testing.T it wraps) called
// t.Parallel. testing keeps that in an unexported field; reading it through
// reflect is read-only and falls back to "not parallel" if it ever moves.
func isParallel(tb testing.TB) bool {
	v := reflect.ValueOf(tb)
	for depth := 0; depth < 4 && v.IsValid(); depth++ {
		if v.Kind() == reflect.Interface {
			v = v.Elem()
		}
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return false
		}
		if v.Type() == reflect.TypeOf((*testing.T)(nil)) {
			f := v.Elem().FieldByName("isParallel")
			return f.IsValid() && f.Kind() == reflect.Bool && f.Bool()
		}
		// A wrapper (a fake TB): look through its first field holding a TB.
		s, next := v.Elem(), reflect.Value{}
		for i := 0; i < s.NumField(); i++ {
			f := s.Field(i)
			if f.Type().Implements(reflect.TypeOf((*testing.TB)(nil)).Elem()) && (f.Kind() == reflect.Interface || f.Kind() == reflect.Pointer) && !f.IsNil() {
				next = f
				break
			}
		}
		v = next
	}
	return false
}

// verify retries until nothing of the test is left or the timeout passes,
// and returns the failure message ("" when clean).
func (c *check) verify() string {
	deadline := time.Now().Add(c.cfg.timeout)
	for sleep := time.Millisecond; ; sleep = min(2*sleep, 100*time.Millisecond) {
		objs, how, notes := c.objects()
		var gorMsg string
		if !c.cfg.noGoroutines {
			gorMsg = c.goroutines()
		}
		if len(objs) == 0 && gorMsg == "" {
			return ""
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			if len(objs) > 0 {
				// Say "created by" only when the test's own goroutines
				// created every object: a fixture's work is attributed.
				fmt.Fprintf(&b, "leaktest: %d object(s) %s %s still alive after %v:\n", len(objs), how, c.name, c.cfg.timeout)
				r := refcount.NewReport(objs)
				r.Notes = notes
				_ = r.WriteText(&b)
			}
			if gorMsg != "" {
				b.WriteString(gorMsg)
			}
			return b.String()
		}
		time.Sleep(sleep)
	}
}

// objects returns the live traced objects that belong to the test (see the
// package documentation), how they belong to it for the heading ("created
// by" when the test's goroutines created them all, else "attributed to")
// and a note for each object attributed otherwise.
func (c *check) objects() ([]*refcount.Object, string, []string) {
	checksMu.Lock()
	others := make([]*check, 0, len(checks))
	for o := range checks {
		if o != c {
			others = append(others, o)
		}
	}
	checksMu.Unlock()
	now := time.Now()
	var out []*refcount.Object
	var notes []string
	how := "created by"
	learned := false
	for _, o := range refcount.LiveObjects() {
		if c.cfg.ignoreClasses[o.Class()] {
			continue
		}
		g, _ := o.Goroutine()
		// A label says for whom the object was made, whoever made it.
		if l := o.Label(); l != "" {
			if l == c.name {
				out = append(out, o)
				how = "attributed to"
				notes = append(notes, fmt.Sprintf("%s attributed to %s by its label (made by goroutine %d, for the test)", o, c.name, g))
			}
			continue
		}
		mine, known := ancestry.DescendsFrom(g, c.goid)
		if !known && !learned {
			ancestry.LearnAll()
			learned = true
			mine, known = ancestry.DescendsFrom(g, c.goid)
		}
		if mine {
			out = append(out, o)
			continue
		}
		other := false
		for _, oc := range others {
			if d, _ := ancestry.DescendsFrom(g, oc.goid); d {
				other = true
				break
			}
		}
		if other {
			continue
		}
		created := o.Created()
		if !created.Before(c.start) && !created.After(now) {
			out = append(out, o)
			how = "attributed to"
			why := "its creating goroutine was not started by any checked test and it carries no label (leaktest.Context)"
			if !known {
				why = "the goroutines between it and a test ended before they were learned"
			}
			notes = append(notes, fmt.Sprintf("%s attributed to %s by time window (created by goroutine %d; %s)", o, c.name, g, why))
		}
	}
	return out, how, notes
}

// goroutines returns a message naming leaked goroutines, or "".
func (c *check) goroutines() string {
	if !c.parallel {
		opts := append([]goleak.Option{c.ignore}, c.cfg.goleakOpts...)
		if err := goleak.Find(opts...); err != nil {
			return fmt.Sprintf("leaktest: goroutines started by %s still running:\n%v\n", c.name, err)
		}
		return ""
	}
	var leaked []string
	for _, g := range allGoroutines() {
		if g.id == c.goid || c.ignored(g.text) {
			continue
		}
		if d, _ := ancestry.DescendsFrom(g.id, c.goid); d {
			leaked = append(leaked, g.text)
		}
	}
	if len(leaked) == 0 {
		return ""
	}
	return fmt.Sprintf("leaktest: %d goroutine(s) started by %s still running:\n%s\n", len(leaked), c.name, strings.Join(leaked, "\n\n"))
}

func (c *check) ignored(text string) bool {
	for _, f := range c.cfg.ignoreFuncs {
		if strings.Contains(text, "\n"+f+"(") {
			return true
		}
	}
	return false
}

type goroutine struct {
	id     uint64
	parent uint64
	text   string
}

// allGoroutines dumps every goroutine (and teaches ancestry their parents).
func allGoroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for _, part := range bytes.Split(buf, []byte("\n\n")) {
		text := strings.TrimSpace(string(part))
		if !strings.HasPrefix(text, "goroutine ") {
			continue
		}
		id, parent := ancestry.Parse([]byte(text))
		ancestry.Note(id, parent)
		out = append(out, goroutine{id: id, parent: parent, text: text})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Main runs the tests and then fails the binary if traced objects are still
// alive or goroutines still run (after the grace period). Use it as
// TestMain: func TestMain(m *testing.M) { leaktest.Main(m) }. With a shared
// fixture, build it in Setup and tear it down in Teardown, so that the
// final check sees what the tests left, not the fixture:
//
//	leaktest.Main(m, leaktest.Setup(fx.start), leaktest.Teardown(fx.stop))
func Main(m *testing.M, opts ...Option) {
	ensureTracing()
	cfg := newConfig(opts)
	for _, f := range cfg.setup {
		f()
	}
	code := m.Run()
	for i := len(cfg.teardown) - 1; i >= 0; i-- {
		cfg.teardown[i]()
	}
	if code == 0 {
		if msg := verifyAll(cfg); msg != "" {
			fmt.Fprint(os.Stderr, msg)
			code = 1
		}
	}
	os.Exit(code)
}

func verifyAll(cfg *config) string {
	deadline := time.Now().Add(cfg.timeout)
	for sleep := time.Millisecond; ; sleep = min(2*sleep, 100*time.Millisecond) {
		var objs []*refcount.Object
		for _, o := range refcount.LiveObjects() {
			if !cfg.ignoreClasses[o.Class()] {
				objs = append(objs, o)
			}
		}
		var gerr error
		if !cfg.noGoroutines {
			gerr = goleak.Find(cfg.goleakOpts...)
		}
		if len(objs) == 0 && gerr == nil {
			return ""
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			if len(objs) > 0 {
				fmt.Fprintf(&b, "leaktest: %d object(s) still alive after all tests:\n", len(objs))
				_ = refcount.NewReport(objs).WriteText(&b)
			}
			if gerr != nil {
				fmt.Fprintf(&b, "leaktest: goroutines still running after all tests:\n%v\n", gerr)
			}
			return b.String()
		}
		time.Sleep(sleep)
	}
}

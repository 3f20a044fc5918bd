package leaktest_test

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/drvkit/drvkit/refcount"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

// disk is a managed object, as a driver would define it.
type disk struct {
	refcount.Object
	name string
}

func newDisk(name string) *disk {
	d := &disk{name: name}
	d.Init("Disk", nil)
	return d
}

// openDisk is where a user client takes its reference on the disk; the
// buggy close path below forgets to drop it.
func openDisk(d *disk, client string) { d.TaggedRetain(client) }

// probe simulates a driver that publishes a disk from a worker goroutine
// and leaks the reference an application took on it.
func probe() *disk {
	ch := make(chan *disk)
	go func() {
		d := newDisk("sda")
		openDisk(d, "client:camera-app")
		d.Release() // the creator's reference is dropped, as it should be
		ch <- d
	}()
	return <-ch
}

// printingTB is a testing.TB for the example: it prints what a failing
// test would print, instead of failing.
type printingTB struct {
	testing.TB
	name     string
	out      io.Writer
	cleanups []func()
}

func (p *printingTB) Name() string     { return p.name }
func (p *printingTB) Helper()          {}
func (p *printingTB) Cleanup(f func()) { p.cleanups = append(p.cleanups, f) }
func (p *printingTB) Errorf(f string, args ...any) {
	fmt.Fprint(p.out, normalize(fmt.Sprintf(f, args...)))
}

func (p *printingTB) finish() {
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
}

var (
	reID    = regexp.MustCompile(`#\d+`)
	reAsm   = regexp.MustCompile(`asm_\w+\.s`)
	reFrame = regexp.MustCompile(` /\S*/([^/\s]+\.(?:go|s)):\d+`)
	reShort = regexp.MustCompile(` ([\w.-]+\.go):\d+`)
)

// normalize makes a report reproducible: object IDs become #N, file paths
// their base names, line numbers go away.
func normalize(s string) string {
	s = reID.ReplaceAllString(s, "#N")
	s = reFrame.ReplaceAllString(s, " $1")
	s = reShort.ReplaceAllString(s, " $1:N")
	return reAsm.ReplaceAllString(s, "asm.s")
}

// leakOnPurpose runs a test body that leaks under Check and writes what the
// test would report to w; it then drops the leaked reference.
func leakOnPurpose(w io.Writer) {
	t := &printingTB{name: "TestProbeDisk", out: w}
	leaktest.Check(t, leaktest.Timeout(10*time.Millisecond), leaktest.ObjectsOnly())
	d := probe()
	t.finish()
	d.TaggedRelease("client:camera-app")
}

// A test leaks a reference: Check fails it with the report, naming the
// holder, the stack that took the reference and why the object is alive.
func ExampleCheck() {
	var b strings.Builder
	leakOnPurpose(&b)
	fmt.Print(b.String())
	// Output:
	// leaktest: 1 object(s) created by TestProbeDisk still alive after 10ms:
	// refcount: 1 live object(s)
	//
	// live objects by class:
	//   Disk                     1
	//
	// unmatched retains by blamed frame:
	//   1 reference(s) on 1 object(s) [Disk] retained at leaktest_test.openDisk example_test.go:N
	//     tags: "client:camera-app"
	//     1× from:
	//       github.com/drvkit/drvkit/refcount/leaktest_test.openDisk example_test.go
	//       github.com/drvkit/drvkit/refcount/leaktest_test.probe.func1 example_test.go
	//       runtime.goexit asm.s
	//
	// objects:
	//   Disk#N retain count 1
	//     held by "client:camera-app" ×1
	//       1× retained at leaktest_test.openDisk example_test.go:N
	//         github.com/drvkit/drvkit/refcount/leaktest_test.openDisk example_test.go
	//         github.com/drvkit/drvkit/refcount/leaktest_test.probe.func1 example_test.go
	//         runtime.goexit asm.s
	//     why alive: "client:camera-app" → Disk#N (root retained at leaktest_test.openDisk example_test.go:N)
}

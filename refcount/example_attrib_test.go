package refcount_test

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/drvkit/drvkit/refcount"
)

// ourkitAcquire stands for a library wrapping drvkit: it takes references
// for its callers, so the line to blame for a leak is its caller's.
func ourkitAcquire(d *device, tag any) { d.TaggedRetain(tag) }

// openSession is the program's code, and the leak: nothing releases the
// session's reference.
func openSession(d *device) { ourkitAcquire(d, "session:camera") }

var (
	reLine = regexp.MustCompile(`\.go:\d+`)
	reID   = regexp.MustCompile(`#\d+`)
)

// A report leads every stack with its blamed frame: the innermost frame
// that is not framework code. Here the program declares its wrapper
// library framework code (SetFramework), so the leak is blamed on
// openSession, the caller, not on the wrapper where TaggedRetain was
// called (the stack's Site).
func ExampleStack_Blame() {
	refcount.Trace("ExampleCamera")
	prev := refcount.SetFramework(func(f refcount.Frame) bool {
		return refcount.IsFramework(f) || strings.HasSuffix(f.Func, ".ourkitAcquire")
	})
	defer func() { refcount.SetFramework(prev) }()

	cam := newDevice("ExampleCamera", "video0")
	openSession(cam)
	cam.Release() // the creator's reference: the session's is the leak

	for _, h := range cam.Holders() {
		st := h.Stacks[0]
		fmt.Printf("%s: site %s, blame %s\n", h.Tag, shortFunc(st.Site().Func), shortFunc(st.Blame().Func))
	}
	var b strings.Builder
	_ = refcount.NewReport([]*refcount.Object{&cam.Object}).WriteText(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.Contains(l, "retained at") || strings.Contains(l, "tags:") {
			fmt.Println(reID.ReplaceAllString(reLine.ReplaceAllString(strings.TrimSpace(l), ".go:N"), "#N"))
		}
	}
	cam.TaggedRelease("session:camera")
	// Output:
	// session:camera: site ourkitAcquire, blame openSession
	// 1 reference(s) on 1 object(s) [ExampleCamera] retained at refcount_test.openSession example_attrib_test.go:N
	// tags: "session:camera"
	// 1× retained at refcount_test.openSession example_attrib_test.go:N
	// why alive: "session:camera" → ExampleCamera#N (root retained at refcount_test.openSession example_attrib_test.go:N)
	// freed video0
}

// Work done on behalf of someone else — a shared fixture creating devices
// for one test among many — is labelled: the objects created inside Do,
// and by goroutines started there while it runs, carry the context's
// label (refcount/leaktest attributes them by it).
func ExampleDo() {
	refcount.Trace("ExampleNub")
	ctx := refcount.WithLabel(context.Background(), "TestPlugStick")
	var nub, port *device
	refcount.Do(ctx, func() {
		nub = newDevice("ExampleNub", "2-1")
		done := make(chan struct{})
		go func() { // a worker started for the work
			defer close(done)
			port = newDevice("ExampleNub", "2-1:1.0")
		}()
		<-done
	})
	other := newDevice("ExampleNub", "2-2") // outside Do: no label
	fmt.Printf("%q %q %q\n", nub.Label(), port.Label(), other.Label())
	fmt.Println(refcount.LabelFrom(ctx))
	for _, d := range []*device{nub, port, other} {
		d.Release()
	}
	// Output:
	// "TestPlugStick" "TestPlugStick" ""
	// TestPlugStick
	// freed 2-1
	// freed 2-1:1.0
	// freed 2-2
}

// plane is a structural tag, as drvkit's registry and attachments are: it
// says the holder is linked to the object, not that it uses it.
type plane string

func (plane) StructuralRef()   {}
func (p plane) String() string { return string(p) }

// WhyAlive answers with owning references only; StructuralHolders gives
// the structural ones as context. A service an application holds open is
// alive because of the application; one nobody uses is alive because the
// registry holds it, which WhyAlive marks Structural.
func ExampleStructuralHolders() {
	refcount.Trace("ExampleDisk", "ExampleClient")
	disk := newDevice("ExampleDisk", "sda")
	disk.TaggedRetain(plane("registry"))
	disk.Release() // the creator's reference, handed to the registry

	for _, c := range refcount.WhyAlive(&disk.Object) {
		fmt.Println("why alive:", reID.ReplaceAllString(c.String(), "#N"))
	}

	app := newDevice("ExampleClient", "camera-app")
	disk.TaggedRetain(app) // the application's user client holds the disk
	for _, c := range refcount.WhyAlive(&disk.Object) {
		fmt.Println("why alive:", reID.ReplaceAllString(c.String(), "#N"))
	}
	for _, c := range refcount.StructuralHolders(&disk.Object) {
		fmt.Println("structural:", reID.ReplaceAllString(c.String(), "#N"))
	}

	disk.TaggedRelease(app)
	app.Release()
	disk.TaggedRelease(plane("registry"))
	// Output:
	// why alive: "registry" → ExampleDisk#N (structural)
	// why alive: (untagged) → ExampleClient#N → ExampleDisk#N
	// structural: "registry" → ExampleDisk#N (structural)
	// freed camera-app
	// freed sda
}

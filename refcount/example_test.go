package refcount_test

import (
	"fmt"
	"strings"

	"github.com/drvkit/drvkit/refcount"
)

// A managed type embeds Object; the count starts at 1 and free runs once.
type device struct {
	refcount.Object
	name string
}

func newDevice(class, name string) *device {
	d := &device{name: name}
	d.Init(class, func() { fmt.Println("freed", name) })
	return d
}

func Example() {
	d := newDevice("ExampleDisk", "sda")
	d.TaggedRetain("client:camera") // an application opens it
	fmt.Println(d.RetainCount())
	d.TaggedRelease("client:camera")
	d.Release() // the creator's reference
	// Output:
	// 2
	// freed sda
}

// A daemon installs a handler so that misuse is reported, not fatal. With
// tracing on, the error carries both stacks: the bad call and the free it
// conflicts with.
func ExampleSetErrorHandler() {
	refcount.Trace("ExampleTape")
	prev := refcount.SetErrorHandler(func(e *refcount.Error) {
		fmt.Println(e.Kind, "on", e.Class)
		fmt.Println("offending call:", shortFunc(e.Offender.Frames[0].Func))
		fmt.Println(e.ConflictWhat+" at:", shortFunc(e.Conflict.Frames[0].Func))
	})
	defer func() { refcount.SetErrorHandler(prev) }()

	t := newDevice("ExampleTape", "st0")
	detach(t) // drops the last reference: freed
	closeTwice(t)
	// Output:
	// freed st0
	// release below zero on ExampleTape
	// offending call: closeTwice
	// freed at: detach
}

func detach(d *device)     { d.Release() }
func closeTwice(d *device) { d.Release() }

func shortFunc(f string) string { return f[strings.LastIndex(f, ".")+1:] }

// WhyAlive explains a leak: the chain of holders from a root down to the
// object. A tag that is itself an object is an ownership edge.
func ExampleWhyAlive() {
	refcount.Trace("ExampleBus", "ExamplePort")
	bus := newDevice("ExampleBus", "usb1")
	port := newDevice("ExamplePort", "1-1")
	bus.TaggedRetain("registry")
	port.TaggedRetain(bus) // the bus holds its port
	bus.Release()
	port.Release()

	for _, c := range refcount.WhyAlive(&port.Object) {
		fmt.Printf("root %q, then", c.Root)
		for _, o := range c.Path {
			fmt.Print(" ", o.Class)
		}
		fmt.Println()
	}
	port.TaggedRelease(bus)
	bus.TaggedRelease("registry")
	// Output:
	// root "registry", then ExampleBus ExamplePort
	// freed 1-1
	// freed usb1
}

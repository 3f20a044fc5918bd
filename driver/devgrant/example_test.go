//go:build linux

package devgrant_test

import (
	"context"
	"fmt"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
)

// The daemon grants a simulated keyboard's hidraw node to a driver; the
// driver opens it through its resources as it would in the daemon, and
// nothing else.
func Example() {
	ctx := context.Background()
	reg := driver.NewRegistry()
	defer reg.Close(ctx)

	// Daemon: its resources (here the simulator's HID devices) and the nub
	// a driver process was matched to.
	keyboards := hidsim.New()
	kbd := keyboards.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 0x0627, Product: 1}})
	res := drivertable.NewResources()
	drivertable.Provide(res, devgrant.HIDKey, func() (hid.Backend, error) { return keyboards, nil })
	nub := reg.NewNub(devgrant.HIDProviderClass, "kbd", driver.NewProperties(map[string]any{"hidraw": "/dev/hidraw0"}))
	_ = reg.Publish(nil, nub)

	g, err := devgrant.Open(ctx, res, nub)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close() // once the driver process is gone
	for _, f := range g.Files {
		fmt.Println("grant:", f.Resource, f.Node, f.Kind)
	}

	// Driver process: the files as received (SCM_RIGHTS), as resources.
	backend, _ := devgrant.HIDKey.From(devgrant.Resources(g.Files))
	dev, err := backend.Open("/dev/hidraw0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dev.Close()
	kbd.Input([]byte{0, 0, 0x0b, 0, 0, 0, 0, 0})
	p := make([]byte, 8)
	n, _ := dev.ReadInput(ctx, p)
	fmt.Printf("report: % x\n", p[:n])
	_, err = backend.Open("/dev/hidraw1")
	fmt.Println(err)
	// Output:
	// grant: hidraw /dev/hidraw0 hid-socket
	// report: 00 00 0b 00 00 00 00 00
	// open /dev/hidraw1: device not granted to this driver
}

package driver_test

import (
	"context"
	"fmt"
	"time"

	"github.com/drvkit/drvkit/driver"
)

// stick is a driver that wants to know why its device goes: after an
// unplug there is nothing left to flush; after an unload or a shutdown it
// would park the device politely.
type stick struct{}

func (stick) Start(ctx context.Context, s *driver.Service) error { return nil }

func (stick) Message(s *driver.Service, m driver.Message) error {
	if m.Type == driver.ServiceIsTerminated {
		fmt.Printf("provider terminated: %s (root cause: %s)\n", m.Cause, m.RootCause)
	}
	return nil
}

func (stick) Stop(s *driver.Service) {
	// A handler hears of its provider's termination before its Stop.
	cause, root := s.TerminationCause()
	if root == driver.CauseUnplug {
		fmt.Printf("stop: %s, root %s: the device is gone, nothing to flush\n", cause.Text(), root.Text())
		return
	}
	fmt.Println("stop: flushing the device")
}

// ExampleService_TerminateSyncWith terminates a nub saying why, as the
// hot-plug bridge does when the kernel removes the device: the nub's
// driver is told the nub's cause, and is itself terminated by cascade
// (CauseProviderTerminated) with the unplug as root cause.
func ExampleService_TerminateSyncWith() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{Name: "stick", ProviderClass: "USBInterface",
		New: func() driver.Driver { return stick{} }})
	nub := r.NewNub("USBInterface", "2-1:1.0", driver.Properties{})
	_ = r.Publish(nil, nub)

	if err := nub.TerminateSyncWith(ctx, driver.CauseUnplug); err != nil {
		fmt.Println(err)
	}
	// Output:
	// provider terminated: device removed (root cause: device removed)
	// stop: provider, root unplug: the device is gone, nothing to flush
}

// ExampleParseCause shows a cause's three forms: the constant, its text
// for the wire and command lines, and its description.
func ExampleParseCause() {
	c, err := driver.ParseCause("unload")
	fmt.Println(c == driver.CauseUnload, err)
	fmt.Printf("%s: %v\n", c.Text(), c)
	_, err = driver.ParseCause("driver unloaded")
	fmt.Println(err)
	// Output:
	// true <nil>
	// unload: driver unloaded
	// unknown termination cause "driver unloaded"
}

package lifecycletest_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
)

type nopDriver struct{}

func (nopDriver) Start(context.Context, *driver.Service) error { return nil }
func (nopDriver) Stop(*driver.Service)                         {}

// Validate checks a trace recorded from a registry (what Record collects
// for Check in a test): a disk nub and its driver come and go. The same
// trace with the driver's stop missing breaks the contract.
func ExampleValidate() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	var mu sync.Mutex
	var trace []driver.LifecycleEvent
	stop := r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		mu.Lock()
		trace = append(trace, e)
		mu.Unlock()
	})
	defer stop()

	_ = r.RegisterPersonality(driver.Personality{Name: "sd", ProviderClass: "SCSIDevice",
		New: func() driver.Driver { return nopDriver{} }})
	nub := r.NewNub("SCSIDevice", "0:0:0:0", driver.Properties{})
	_ = r.Publish(nil, nub)
	_ = nub.TerminateSync(ctx) // the disk is unplugged; everything is freed

	mu.Lock()
	defer mu.Unlock()
	fmt.Println(len(trace), "events:", lifecycletest.Validate(trace, true))

	broken := slices.DeleteFunc(slices.Clone(trace), func(e driver.LifecycleEvent) bool {
		return e.Step == driver.StepStop && e.Name == "sd"
	})
	err := lifecycletest.Validate(broken, true)
	// Service IDs and sequence numbers depend on what ran before.
	fmt.Println(regexp.MustCompile(`(#|event )\d+`).ReplaceAllString(err.Error(), "${1}N"))
	// Output:
	// 16 events: <nil>
	// event N (detach sd#N "sd"): detach after terminate but before stop
	// event N (free sd#N "sd"): free before stop
	// service #N "sd" terminated but never stopped
}

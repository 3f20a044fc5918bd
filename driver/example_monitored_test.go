package driver_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver"
)

// A monitor callback updates a setpoint and a readback together; the state
// machine's condition and action see the same instant.
func ExampleGroup_When() {
	g := driver.NewGroup()
	setpoint := driver.NewMonitored(g, 10.0)
	readback := driver.NewMonitored(g, 0.0)

	g.Update(func(tx *driver.Tx) { // written by a callback
		driver.Set(tx, setpoint, 12.5)
		driver.Set(tx, readback, 12.4)
	})

	ran := g.When(func(v *driver.View) bool {
		return driver.Get(v, setpoint)-driver.Get(v, readback) < 0.5
	}, func(v *driver.View) {
		// Still the values the condition saw, whatever callbacks do now.
		fmt.Printf("settled at %.1f (readback %.1f)\n", driver.Get(v, setpoint), driver.Get(v, readback))
	})
	fmt.Println(ran)
	// Output:
	// settled at 12.5 (readback 12.4)
	// true
}

// Jobs are owned by their service: Free runs exactly once, whether the job
// ran or was cancelled by the service's termination.
func ExampleService_Submit() {
	r := driver.NewRegistry()
	defer r.Close(context.Background())
	nub := r.NewNub("Device", "dev", driver.Properties{})
	_ = r.Publish(nil, nub)

	done := make(chan struct{})
	_ = nub.Submit(driver.Job{
		Key:  "flush",
		Run:  func(ctx context.Context) error { fmt.Println("flushing"); return nil },
		Free: func() { fmt.Println("freed"); close(done) },
	})
	<-done
	_ = nub.TerminateSync(context.Background())
	err := nub.Submit(driver.Job{Run: func(context.Context) error { return nil }, Free: func() { fmt.Println("freed unrun") }})
	fmt.Println(errors.Is(err, driver.ErrNotActive))
	// Output:
	// flushing
	// freed
	// freed unrun
	// true
}

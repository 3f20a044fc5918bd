package driverproc_test

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
)

// The main function of a driver bundle's executable: the driver-table
// entry of an in-process driver, unchanged. The daemon starts it with the
// protocol's socket as descriptor 3 (examples/bundles/gocounter); started
// otherwise it exits with status 2 and says why.
func ExampleMain() {
	driverproc.Main(counter.Entry)
}

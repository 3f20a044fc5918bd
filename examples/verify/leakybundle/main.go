// Command leakybundle is the executable of the leakybundle driver bundle, a
// driver with a bug on purpose that runs out of process: see package leaky.
//
//	go build -o examples/verify/leakybundle/leakybundle ./examples/verify/leakybundle
//	drvctl verify examples/verify/leakybundle            # FAIL, culprit (*Driver).Start
//	drvctl verify examples/verify/leakybundle/fixed.toml # PASS
package main

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/examples/verify/leakybundle/leaky"
)

// The daemon names the entry by the manifest's name.
func main() { driverproc.Main(leaky.Entry, leaky.Fixed) }

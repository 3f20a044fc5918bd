// Command gocounter is the executable of the gocounter driver bundle: the
// in-process sample driver of package counter, unchanged, run in a process
// of its own by the daemon (see manifest.toml and docs/bundles.md).
package main

import (
	"github.com/drvkit/drvkit/driver/driverproc"
	"github.com/drvkit/drvkit/examples/bundles/gocounter/counter"
)

func main() { driverproc.Main(counter.Entry) }

package sim_test

import (
	"context"
	"fmt"

	"github.com/drvkit/drvkit/hotplug/sim"
)

func ExampleNew() {
	sc, err := sim.ParseScenarioString("example.scn", `
plug usb 1-1 vid=0781 pid=5567 serial=X ifaces=08/06/50
unplug 1-1
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	src, _ := sim.New(sc, sim.Config{})
	defer src.Close()
	for {
		ev, err := src.Next(context.Background())
		if err != nil {
			break // io.EOF at the end of the scenario
		}
		if ev.Subsystem == "usb" || ev.Subsystem == "block" || ev.Subsystem == "scsi_generic" {
			fmt.Println(ev.Action, ev.Subsystem, ev.Name())
		}
	}
	// Output:
	// add usb 1-1
	// add usb 1-1:1.0
	// bind usb 1-1:1.0
	// bind usb 1-1
	// add scsi_generic sg0
	// add block sda
	// remove scsi_generic sg0
	// remove block sda
	// unbind usb 1-1:1.0
	// remove usb 1-1:1.0
	// unbind usb 1-1
	// remove usb 1-1
}

func ExampleParseScenario_error() {
	_, err := sim.ParseScenarioString("bad.scn", "plug usb 2-1 vid=46f4 pid=0001 ifaces=08/06/50\nunplug 2-9\n")
	fmt.Println(err)
	// Output: bad.scn:2: unplug: no device at port 2-9
}

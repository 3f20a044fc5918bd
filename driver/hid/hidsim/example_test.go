package hidsim_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
)

// A test plays the keyboard: it types (Input), answers the LED output
// report with a hook, serves a feature report, and unplugs the device
// under the driver.
func Example() {
	b := hidsim.New()
	kbd := b.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 0x046d, Product: 0xc31c}})
	kbd.OnOutput(func(r []byte) error {
		fmt.Printf("keyboard: LEDs set to %#x\n", r[1]) // r[0]: the report ID, 0 (not numbered)
		return nil
	})
	kbd.SetFeatureReport(0, []byte{0, 1})
	kbd.Input([]byte{0, 0, 0x04, 0, 0, 0, 0, 0}) // "a", sent before the driver opens: kept for it

	// The driver's side, as through hid.Hidraw on a real machine.
	dev, err := b.Open("/dev/hidraw0")
	if err != nil {
		fmt.Println(err)
		return
	}
	buf := make([]byte, 8)
	n, _ := dev.ReadInput(context.Background(), buf)
	fmt.Printf("driver: read % x\n", buf[:n])
	_ = dev.WriteOutput([]byte{0, 0x02})                     // caps lock: report ID 0, then the LED bits
	fmt.Println("driver:", dev.WriteOutput([]byte{0x02}))    // the LED bits alone: hidraw refuses it
	fmt.Println("driver:", dev.WriteOutput([]byte{0, 2, 3})) // not the descriptor's size
	n, _ = dev.GetFeature(0, buf)
	fmt.Printf("driver: feature % x\n", buf[:n])
	fmt.Println("open handles:", kbd.OpenHandles(), "outputs:", len(kbd.Outputs()))

	kbd.Unplug()
	err = dev.WriteOutput([]byte{0})
	fmt.Println("driver:", err, errors.Is(err, hid.ErrNoDevice))
	_ = dev.Close()
	// Output:
	// driver: read 00 00 04 00 00 00 00 00
	// keyboard: LEDs set to 0x2
	// driver: write /dev/hidraw0: report size out of range
	// driver: write /dev/hidraw0: report size out of range: output report 0 is 2 bytes, not 3
	// driver: feature 00 01
	// open handles: 1 outputs: 1
	// driver: write /dev/hidraw0: no such device true
}

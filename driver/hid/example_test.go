package hid_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/driver/hid/hidsim"
)

// A driver sizes its reports from the report descriptor, and matches the
// device by its top-level usage.
func ExampleParseReportDescriptor() {
	d, err := hid.ParseReportDescriptor(hid.BootKeyboard)
	if err != nil {
		fmt.Println(err)
		return
	}
	keyboard := d.UsagePage == hid.UsagePageGenericDesktop && d.Usage == hid.UsageKeyboard
	fmt.Println("keyboard:", keyboard, "numbered:", d.Numbered)
	for _, r := range d.Reports {
		fmt.Printf("%s report %d: %d bytes\n", r.Kind, r.ID, d.Size(r.Kind, r.ID))
	}

	// A truncated descriptor is refused, saying where.
	_, err = hid.ParseReportDescriptor(hid.BootKeyboard[:3])
	fmt.Println(err)
	fmt.Println(errors.Is(err, hid.ErrBadDescriptor))
	// Output:
	// keyboard: true numbered: false
	// input report 0: 8 bytes
	// output report 0: 1 bytes
	// malformed report descriptor at byte 2: truncated item
	// true
}

// A driver is given a Backend (hid.Hidraw{} on Linux; here the simulated
// one) and reads input reports until the device goes: every call on an
// unplugged device fails with ErrNoDevice.
func ExampleBackend() {
	var backend hid.Backend = hidsim.New()
	sim := backend.(*hidsim.Backend)
	kbd := sim.Plug("/dev/hidraw0", hidsim.Spec{Info: hid.Info{Bus: hid.BusUSB, Vendor: 0x046d, Product: 0xc31c}})

	dev, err := backend.Open("/dev/hidraw0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer dev.Close()
	info, _ := dev.Info()
	fmt.Printf("bus %d, %04x:%04x\n", info.Bus, info.Vendor, info.Product)

	kbd.Input([]byte{0x02, 0, 0x0b, 0, 0, 0, 0, 0}) // shift + h
	buf := make([]byte, 8)
	n, err := dev.ReadInput(context.Background(), buf)
	fmt.Printf("% x %v\n", buf[:n], err)

	kbd.Unplug()
	_, err = dev.ReadInput(context.Background(), buf)
	fmt.Println(err)
	fmt.Println(errors.Is(err, hid.ErrNoDevice))
	// Output:
	// bus 3, 046d:c31c
	// 02 00 0b 00 00 00 00 00 <nil>
	// read /dev/hidraw0: no such device
	// true
}

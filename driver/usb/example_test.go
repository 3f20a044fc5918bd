package usb_test

import (
	"fmt"

	"github.com/drvkit/drvkit/driver/usb"
)

func ExampleParseSelector() {
	for _, s := range []string{"002/005", "46f4:0001", "46f4:0001:SER123", "bogus"} {
		sel, err := usb.ParseSelector(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("bus %d addr %d vendor %04x product %04x serial %q\n", sel.Bus, sel.Address, sel.Vendor, sel.Product, sel.Serial)
	}
	// Output:
	// bus 2 addr 5 vendor 0000 product 0000 serial ""
	// bus 0 addr 0 vendor 46f4 product 0001 serial ""
	// bus 0 addr 0 vendor 46f4 product 0001 serial "SER123"
	// bad selector "bogus": want BUS/ADDR or VID:PID[:SERIAL]
}

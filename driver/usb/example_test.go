package usb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
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

// authorizer is a backend wrapper that must ready an interface before it is
// claimed, as the USB hold (hotplug/usbhold) does.
type authorizer struct{ usb.Backend }

func (a authorizer) Unwrap() usb.Backend { return a.Backend }

func (a authorizer) ReadyClaim(_ context.Context, bus, addr, iface int) error {
	fmt.Printf("authorize %03d/%03d interface %d\n", bus, addr, iface)
	return nil
}

// A claim made beside the daemon's backend — on a usbfs descriptor the
// caller opened itself, as package devgrant does for a driver process — is
// readied by the backend's wrappers first; the journal and the device
// backend stay visible below them.
func ExampleReadyClaim() {
	dir, _ := os.MkdirTemp("", "drvkit-example-")
	defer os.RemoveAll(dir)
	j, _ := usb.OpenJournal(filepath.Join(dir, "usb-detached.json"))
	dev := usbtest.New()
	defer dev.Close()
	b := authorizer{j.Wrap(dev)}

	if err := usb.ReadyClaim(context.Background(), b, 2, 8, 0); err != nil {
		fmt.Println(err)
	}
	fmt.Println(usb.JournalOf(b) == j, usb.Innermost(b) == usb.Backend(dev))
	// Output:
	// authorize 002/008 interface 0
	// true true
}

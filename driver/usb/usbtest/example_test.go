package usbtest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

// The simulated bus under its old name: plug a device, open it by ids.
func ExampleNew() {
	ctx := context.Background()
	b := usbtest.New()
	defer b.Close()
	b.Plug(usbtest.DeviceSpec{Bus: 1, Address: 2, Vendor: 0x1234, Product: 0x5678})
	h, err := b.Open(ctx, usb.Selector{Vendor: 0x1234, Product: 0x5678})
	fmt.Println(err)
	if err == nil {
		_ = h.Close()
	}
	_, err = b.Open(ctx, usb.Selector{Vendor: 0xdead})
	fmt.Println(errors.Is(err, usb.ErrNotFound))
	// Output:
	// <nil>
	// true
}

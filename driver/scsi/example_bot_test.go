package scsi_test

import (
	"context"
	"fmt"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

// A user-space USB mass-storage driver: open the stick, speak bulk-only
// transport to it, and use the SCSI command layer on top. With real
// hardware the backend is usb.NewGousb(); here it is the fake.
func ExampleNewBOT() {
	ctx := context.Background()
	backend := usbtest.New() // usb.NewGousb() on a real machine
	defer backend.Close()
	_, stick := backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 2, Vendor: 0x46f4, Product: 0x0001},
		scsitest.NewDisk(2048, 512, scsitest.WithInquiry("QEMU", "QEMU HARDDISK", "2.5+", scsi.TypeDisk)))

	h, err := backend.Open(ctx, usb.Selector{Vendor: 0x46f4, Product: 0x0001})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	bot, err := scsi.NewBOT(ctx, h) // detaches usb-storage, recorded
	if err != nil {
		fmt.Println(err)
		return
	}
	dev := scsi.NewDevice(bot)
	inq, _ := dev.Inquiry(ctx)
	c, _ := dev.ReadCapacity(ctx)
	fmt.Printf("%s %s, %d MiB\n", inq.Vendor, inq.Product, c.Bytes()>>20)
	dev.Close() // releases the interface: usb-storage is re-attached
	fmt.Println(stick.Events())
	// Output:
	// QEMU QEMU HARDDISK, 1 MiB
	// [detach usb-storage from interface 0 attach usb-storage to interface 0]
}

package scsitest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
)

// A read-only disk, driven through scsi.Device as a driver would.
func ExampleNewDisk() {
	ctx := context.Background()
	t := scsitest.NewTransport(scsitest.NewDisk(2048, 512,
		scsitest.WithInquiry("ACME", "ROM", "1.0", scsi.TypeDisk), scsitest.ReadOnly()))
	dev := scsi.NewDevice(t)
	id, _ := dev.Inquiry(ctx)
	c, _ := dev.Capacity(ctx)
	fmt.Printf("%s %s: %d blocks\n", id.Vendor, id.Product, c.Blocks())
	err := dev.Write(ctx, 0, make([]byte, 512))
	fmt.Println("write refused:", err != nil)
	t.Unplug()
	_, err = dev.Inquiry(ctx)
	fmt.Println("unplugged:", errors.Is(err, scsi.ErrNoDevice))
	// Output:
	// ACME ROM: 2048 blocks
	// write refused: true
	// unplugged: true
}

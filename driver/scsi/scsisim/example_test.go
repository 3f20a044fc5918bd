package scsisim_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
)

// A driver under test talks to an in-memory disk through scsi.Device, as
// it would to /dev/sgN; the test makes the disk fail a command, then pulls
// it.
func ExampleNewTransport() {
	ctx := context.Background()
	disk := scsisim.NewDisk(1<<21, 512, scsisim.WithInquiry("ACME", "TESTDISK", "2.1", scsi.TypeDisk))
	t := scsisim.NewTransport(disk)
	dev := scsi.NewDevice(t)

	id, _ := dev.Inquiry(ctx)
	c, _ := dev.Capacity(ctx)
	fmt.Printf("%s %s: %d MiB\n", id.Vendor, id.Product, c.Bytes()>>20)
	_ = dev.Write(ctx, 100, []byte(fmt.Sprintf("%-512s", "hello")))
	buf := make([]byte, 512)
	_, _ = dev.Read(ctx, 100, buf)
	fmt.Printf("block 100: %q\n", buf[:5])

	// MEDIUM ERROR / UNRECOVERED READ ERROR on the next READ.
	disk.FailNext(scsi.OpRead10, scsi.SenseMediumError, 0x11, 0x00)
	_, err := dev.Read(ctx, 100, buf)
	fmt.Println(err)
	fmt.Println(errors.Is(err, scsi.ErrMediumError))

	t.Unplug()
	_, err = dev.Read(ctx, 100, buf)
	fmt.Println(errors.Is(err, scsi.ErrNoDevice))
	// Output:
	// ACME TESTDISK: 1024 MiB
	// block 100: "hello"
	// READ(10): MEDIUM ERROR (ASC/ASCQ 0x11/0x00 unrecovered read error)
	// true
	// true
}

package usbsim_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
)

// A scripted device: a bulk-in endpoint served by a function and a kernel
// driver bound at plug time. Claiming the interface detaches the kernel
// driver; releasing it re-attaches it; unplugging fails what comes after.
func ExampleBackend_Plug() {
	ctx := context.Background()
	b := usbsim.New()
	defer b.Close()
	dev := b.Plug(usbsim.DeviceSpec{Bus: 1, Address: 4, Vendor: 0x1234, Product: 0x5678,
		Interfaces: []usbsim.InterfaceSpec{{Number: 0, Class: 0xff, KernelDriver: "usbtmc",
			Endpoints: []usbsim.EndpointSpec{{Address: 0x81, Type: usb.TransferBulk, MaxPacketSize: 512,
				Handler: func(ctx context.Context, buf []byte) (int, error) { return copy(buf, "reading 3.14 V"), nil }}},
		}}})

	h, err := b.Open(ctx, usb.Selector{Vendor: 0x1234, Product: 0x5678})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	_ = h.ClaimInterface(ctx, 0, 0)
	fmt.Println("bound while claimed:", dev.KernelDriver(0))
	buf := make([]byte, 64)
	n, err := h.BulkTransfer(ctx, 0x81, buf)
	fmt.Printf("%q %v\n", buf[:n], err)
	_ = h.ReleaseInterface(0)
	fmt.Println(dev.Events())

	dev.Unplug()
	_, err = h.BulkTransfer(ctx, 0x81, buf)
	fmt.Println(errors.Is(err, usb.ErrNoDevice))
	// Output:
	// bound while claimed: usbfs
	// "reading 3.14 V" <nil>
	// [detach usbtmc from interface 0 attach usbtmc to interface 0]
	// true
}

// A USB stick whose logical unit is an in-memory disk: the bulk-only
// transport of package scsi talks to it as to a real one.
func ExampleBackend_PlugMassStorage() {
	ctx := context.Background()
	b := usbsim.New()
	defer b.Close()
	disk := scsisim.NewDisk(2048, 512, scsisim.WithInquiry("SanDisk", "Cruzer Blade", "1.00", scsi.TypeDisk))
	stick, _ := b.PlugMassStorage(usbsim.DeviceSpec{Bus: 2, Address: 3, Vendor: 0x0781, Product: 0x5567}, disk)

	h, err := b.Open(ctx, usb.Selector{Bus: 2, Address: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	bot, err := scsi.NewBOT(ctx, h) // claims interface 0: usb-storage is detached
	if err != nil {
		fmt.Println(err)
		return
	}
	dev := scsi.NewDevice(bot)
	defer dev.Close()
	id, _ := dev.Inquiry(ctx)
	c, _ := dev.Capacity(ctx)
	fmt.Printf("%s %s, %d blocks of %d bytes\n", id.Vendor, id.Product, c.Blocks(), c.BlockSize)

	stick.StallNextDataIn() // a short read ends with a stall; BOT clears it
	_, err = dev.Read(ctx, 0, make([]byte, 512))
	fmt.Println("read after stall:", err)
	// Output:
	// SanDisk Cruzer Blade, 2048 blocks of 512 bytes
	// read after stall: <nil>
}

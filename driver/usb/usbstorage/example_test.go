package usbstorage_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
)

// The usbstorage driver in a registry: a stick appears (the nub is what the
// hotplug bridge publishes for interface 2-1:1.0), an application reads
// it through the client methods, and the stick is pulled.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	backend := usbtest.New() // usb.NewGousb() with real hardware
	defer backend.Close()
	_ = r.RegisterPersonality(usbstorage.Personality(backend))

	_, stick := backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1},
		scsitest.NewDisk(2048, 512))
	nub := r.NewNub(usbstorage.NubClass, "2-1:1.0", driver.NewProperties(map[string]any{
		usbstorage.PropBusNum: 2, usbstorage.PropDevNum: 3, usbstorage.PropInterfaceNumber: 0,
		usbstorage.PropInterfaceClass: 0x08, usbstorage.PropInterfaceSubClass: 0x06, usbstorage.PropInterfaceProtocol: 0x50,
	}))
	if err := r.Publish(nil, nub); err != nil {
		fmt.Println(err)
		return
	}
	ms := nub.Clients()[0]
	out, _ := ms.Call(ctx, blockdev.MethodCapacity, nil)
	c, _ := blockdev.DecodeCapacity(out)
	fmt.Printf("%s: %d blocks of %d bytes, kernel driver now %q\n", ms.Class(), c.Blocks, c.BlockSize, stick.KernelDriver(0))

	stick.Unplug()
	_, err := ms.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 1))
	fmt.Println("read after unplug:", errors.Is(err, driver.ErrNoDevice))
	fmt.Println("terminate:", nub.TerminateSync(ctx), "open handles:", backend.OpenHandles())
	// Output:
	// USBMassStorage: 2048 blocks of 512 bytes, kernel driver now "usbfs"
	// read after unplug: true
	// terminate: <nil> open handles: 0
}

package blockdrv_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/blockdrv"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
)

// diskDriver is a block driver in a few lines: it opens its transport in
// Start and serves the blockdev methods over it.
type diskDriver struct {
	t   scsi.Transport
	dev atomic.Pointer[scsi.Device]
}

func (d *diskDriver) Start(ctx context.Context, s *driver.Service) error {
	dev := scsi.NewDevice(d.t)
	if err := s.Manage(dev); err != nil {
		return err
	}
	d.dev.Store(dev)
	return nil
}

func (d *diskDriver) Stop(*driver.Service) { d.dev.Store(nil) }

func (d *diskDriver) Methods() map[string]driver.Method {
	return blockdrv.Methods(func(*driver.Service) *scsi.Device { return d.dev.Load() })
}

// The client side encodes requests and decodes replies with the package's
// helpers; a device that vanished fails with driver.ErrNoDevice.
func ExampleMethods() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)
	sg0 := scsitest.NewTransport(scsitest.NewDisk(8192, 512, scsitest.WithInquiry("QEMU", "QEMU HARDDISK", "2.5+", scsi.TypeDisk)))
	_ = r.RegisterPersonality(driver.Personality{Name: "disk", ProviderClass: "SCSIDevice",
		New: func() driver.Driver { return &diskDriver{t: sg0} }})
	nub := r.NewNub("SCSIDevice", "0:0:0:0", driver.Properties{})
	if err := r.Publish(nil, nub); err != nil {
		fmt.Println(err)
		return
	}
	disk := nub.Clients()[0]

	out, _ := disk.Call(ctx, blockdev.MethodInquiry, nil)
	id, _ := blockdev.DecodeInquiry(out)
	out, _ = disk.Call(ctx, blockdev.MethodCapacity, nil)
	c, _ := blockdev.DecodeCapacity(out)
	fmt.Printf("%s %s rev %s: %d x %d bytes\n", id.Vendor, id.Product, id.Revision, c.Blocks, c.BlockSize)

	block := make([]byte, 512)
	copy(block, "drvkit")
	_, err := disk.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(42, block))
	fmt.Println("write:", err)
	out, err = disk.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(42, 1))
	fmt.Printf("read: %d bytes %q %v\n", len(out), out[:6], err)

	sg0.Unplug()
	_, err = disk.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(42, 1))
	fmt.Println("unplugged:", errors.Is(err, driver.ErrNoDevice))
	fmt.Println("terminated:", nub.TerminateSync(ctx))
	// Output:
	// QEMU QEMU HARDDISK rev 2.5+: 8192 x 512 bytes
	// write: <nil>
	// read: 512 bytes "drvkit" <nil>
	// unplugged: true
	// terminated: <nil>
}

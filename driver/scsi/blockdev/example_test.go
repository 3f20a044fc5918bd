package blockdev_test

import (
	"context"
	"fmt"
	"os"

	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/userclient"
)

// The requests an application sends and the replies it decodes, byte for
// byte (integers big-endian).
func Example() {
	fmt.Printf("read  LBA 42, 2 blocks: % x\n", blockdev.EncodeRead(42, 2))
	fmt.Printf("write LBA 1:            % x\n", blockdev.EncodeWrite(1, []byte("data"))) // a real write carries whole blocks

	q, err := blockdev.DecodeInquiry([]byte(`{"vendor":"QEMU","product":"QEMU HARDDISK","revision":"2.5+","type":0,"removable":true}`))
	fmt.Printf("%s %s rev %s, type %d, removable %v, %v\n", q.Vendor, q.Product, q.Revision, q.Type, q.Removable, err)
	c, err := blockdev.DecodeCapacity([]byte(`{"blocks":8192,"block_size":512}`))
	fmt.Printf("%d blocks of %d bytes (%d KiB), %v\n", c.Blocks, c.BlockSize, c.Blocks*uint64(c.BlockSize)>>10, err)
	// Output:
	// read  LBA 42, 2 blocks: 00 00 00 00 00 00 00 2a 00 00 00 02
	// write LBA 1:            00 00 00 00 00 00 00 01 64 61 74 61
	// QEMU QEMU HARDDISK rev 2.5+, type 0, removable true, <nil>
	// 8192 blocks of 512 bytes (4096 KiB), <nil>
}

// An application reads the first block of a USB stick through the daemon:
// package userclient carries the calls, blockdev encodes them. (It needs a
// running `drvctl serve`, so it is not run here.)
func Example_application() {
	ctx := context.Background()
	c, err := userclient.Dial(ctx, os.Getenv("DRVCTL_SOCKET"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	h, err := c.Open(ctx, userclient.Match{Personality: "usbstorage"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	out, err := h.Call(ctx, blockdev.MethodCapacity, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	capacity, _ := blockdev.DecodeCapacity(out)
	block, err := h.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 1))
	if err != nil {
		fmt.Println(err) // errors.Is(err, userclient.ErrNoDevice) after an unplug
		return
	}
	fmt.Printf("%d blocks; block 0 starts % x\n", capacity.Blocks, block[:16])
}

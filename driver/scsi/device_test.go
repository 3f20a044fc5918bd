package scsi_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/stretchr/testify/require"
)

func newDev(t *testing.T, blocks uint64, bs uint32, opts ...scsi.DeviceOption) (*scsi.Device, *scsitest.Disk, *scsitest.Transport) {
	t.Helper()
	disk := scsitest.NewDisk(blocks, bs)
	tr := scsitest.NewTransport(disk)
	d := scsi.NewDevice(tr, opts...)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d, disk, tr
}

func TestDeviceInquiryCapacity(t *testing.T) {
	ctx := context.Background()
	d, _, _ := newDev(t, 2048, 512)
	inq, err := d.Inquiry(ctx)
	require.NoError(t, err)
	require.Equal(t, "DRVKIT", inq.Vendor)
	require.Equal(t, "MEMDISK", inq.Product)
	require.Equal(t, scsi.TypeDisk, inq.Type)
	require.NoError(t, d.TestUnitReady(ctx))
	c, err := d.ReadCapacity(ctx)
	require.NoError(t, err)
	require.Equal(t, scsi.Capacity{LastLBA: 2047, BlockSize: 512}, c)
	require.NoError(t, d.SynchronizeCache(ctx))
	s, err := d.RequestSense(ctx)
	require.NoError(t, err)
	require.Equal(t, scsi.SenseNoSense, s.Key)
}

func TestDeviceReadWrite(t *testing.T) {
	ctx := context.Background()
	d, disk, _ := newDev(t, 1024, 512, scsi.WithMaxTransfer(4096))
	data := bytes.Repeat([]byte("drvkit!!"), 64*20) // 20 blocks, split into 8+8+4
	require.NoError(t, d.Write(ctx, 100, data))
	require.Equal(t, 3, disk.Count(scsi.OpWrite10))
	got := make([]byte, len(data))
	n, err := d.Read(ctx, 100, got)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.Equal(t, data, got)
	require.Zero(t, disk.Count(scsi.OpRead16))

	// Bounds are checked before anything is sent.
	_, err = d.Read(ctx, 1020, make([]byte, 8*512))
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)
	_, err = d.Read(ctx, 0, make([]byte, 100))
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)
	require.Equal(t, 3, disk.Count(scsi.OpRead10))
}

func TestDevice16ByteVariants(t *testing.T) {
	ctx := context.Background()
	const blocks = 1<<33 + 10 // 4 TiB at 512 bytes: past READ CAPACITY(10)
	d, disk, _ := newDev(t, blocks, 512)
	c, err := d.ReadCapacity(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(blocks-1), c.LastLBA)
	require.Equal(t, 1, disk.Count(scsi.OpServiceAction16))

	// Low LBAs still use the 10-byte form; high ones need 16 bytes.
	require.NoError(t, d.Write(ctx, 5, make([]byte, 512)))
	require.Equal(t, 1, disk.Count(scsi.OpWrite10))
	hi := bytes.Repeat([]byte{0xa5}, 1024)
	require.NoError(t, d.Write(ctx, 1<<32+3, hi))
	require.Equal(t, 1, disk.Count(scsi.OpWrite16))
	got := make([]byte, 1024)
	_, err = d.Read(ctx, 1<<32+3, got)
	require.NoError(t, err)
	require.Equal(t, hi, got)
	require.Equal(t, 1, disk.Count(scsi.OpRead16))
	// A range ending past 2^32-1 needs 16 bytes too.
	_, err = d.Read(ctx, 1<<32-1, got)
	require.NoError(t, err)
	require.Equal(t, 2, disk.Count(scsi.OpRead16))
}

func TestDeviceSenseErrors(t *testing.T) {
	ctx := context.Background()
	d, disk, _ := newDev(t, 64, 512)
	_, err := d.ReadCapacity(ctx)
	require.NoError(t, err)

	disk.FailNext(scsi.OpRead10, scsi.SenseMediumError, 0x11, 0x00)
	_, err = d.Read(ctx, 0, make([]byte, 512))
	require.ErrorIs(t, err, scsi.ErrMediumError)
	require.ErrorContains(t, err, "READ(10): MEDIUM ERROR")

	disk.SetReady(false)
	err = d.TestUnitReady(ctx)
	require.ErrorIs(t, err, scsi.ErrNotReady)
	var se *scsi.SenseError
	require.ErrorAs(t, err, &se)
	require.Equal(t, uint8(0x3a), se.ASC)
	disk.SetReady(true)

	// A unit attention drops the cached capacity: the next Read re-reads it.
	before := disk.Count(scsi.OpReadCapacity10)
	disk.RaiseUnitAttention(0x29, 0x00)
	require.ErrorIs(t, d.TestUnitReady(ctx), scsi.ErrUnitAttention)
	_, err = d.Read(ctx, 0, make([]byte, 512))
	require.NoError(t, err)
	require.Equal(t, before+1, disk.Count(scsi.OpReadCapacity10))

	disk.FailNext(-1, scsi.SenseIllegalRequest, 0x20, 0x00)
	require.ErrorIs(t, d.SynchronizeCache(ctx), scsi.ErrIllegalRequest)
	// Recovered errors are not failures.
	disk.FailNext(-1, scsi.SenseRecoveredError, 0x17, 0x01)
	require.NoError(t, d.TestUnitReady(ctx))
}

func TestDeviceReadOnly(t *testing.T) {
	tr := scsitest.NewTransport(scsitest.NewDisk(8, 512, scsitest.ReadOnly()))
	d := scsi.NewDevice(tr)
	defer d.Close()
	require.ErrorIs(t, d.Write(context.Background(), 0, make([]byte, 512)), scsi.ErrDataProtect)
}

func TestDeviceNoDevice(t *testing.T) {
	ctx := context.Background()
	d, _, tr := newDev(t, 64, 512)
	tr.Unplug()
	_, err := d.Inquiry(ctx)
	require.ErrorIs(t, err, scsi.ErrNoDevice)
	var oe *scsi.OpError
	require.ErrorAs(t, err, &oe)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, d.TestUnitReady(cctx), context.Canceled)
}

func Example() {
	ctx := context.Background()
	disk := scsitest.NewDisk(2048, 512, scsitest.WithInquiry("ACME", "SUPERDISK", "0001", scsi.TypeDisk))
	dev := scsi.NewDevice(scsitest.NewTransport(disk))
	defer dev.Close()

	inq, _ := dev.Inquiry(ctx)
	capa, _ := dev.ReadCapacity(ctx)
	fmt.Printf("%s %s: %d blocks of %d bytes\n", inq.Vendor, inq.Product, capa.Blocks(), capa.BlockSize)

	if err := dev.Write(ctx, 7, bytes.Repeat([]byte{'x'}, 512)); err != nil {
		fmt.Println(err)
	}
	buf := make([]byte, 512)
	_, err := dev.Read(ctx, 4096, buf)
	fmt.Println(err)
	// Output:
	// ACME SUPERDISK: 2048 blocks of 512 bytes
	// READ: invalid request: lba 4096 + 1 blocks beyond the last block 2047
}

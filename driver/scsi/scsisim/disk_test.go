package scsisim_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/stretchr/testify/require"
)

func TestDiskCommands(t *testing.T) {
	d := scsisim.NewDisk(100, 512, scsisim.WithInquiry("V", "P", "R", scsi.TypeCDROM))
	in := make([]byte, 64)
	n, st, _ := d.Execute(scsi.InquiryCDB(64), nil, in)
	require.Equal(t, uint8(0), st)
	require.Equal(t, 36, n)
	inq, err := scsi.ParseInquiry(in[:n])
	require.NoError(t, err)
	require.Equal(t, scsi.TypeCDROM, inq.Type)
	require.Equal(t, "P", inq.Product)

	// Allocation length is honoured.
	n, _, _ = d.Execute(scsi.InquiryCDB(5), nil, in)
	require.Equal(t, 5, n)

	// Failures keep sense for REQUEST SENSE (BOT has no autosense).
	_, st, sense := d.Execute([]byte{0xc5, 0, 0, 0, 0, 0}, nil, nil)
	require.Equal(t, uint8(scsi.StatusCheckCondition), st)
	s, err := scsi.ParseSense(sense)
	require.NoError(t, err)
	require.Equal(t, scsi.SenseIllegalRequest, s.Key)
	require.Equal(t, uint8(0x20), s.ASC)
	n, st, _ = d.Execute(scsi.RequestSenseCDB(18), nil, in)
	require.Equal(t, uint8(0), st)
	s, err = scsi.ParseSense(in[:n])
	require.NoError(t, err)
	require.Equal(t, uint8(0x20), s.ASC)
	n, _, _ = d.Execute(scsi.RequestSenseCDB(18), nil, in)
	s, _ = scsi.ParseSense(in[:n])
	require.Equal(t, scsi.SenseNoSense, s.Key, "sense is consumed")

	// Out of range, short CDB, VPD.
	cdb, _ := scsi.Read10CDB(99, 2)
	_, _, sense = d.Execute(cdb, nil, make([]byte, 1024))
	s, _ = scsi.ParseSense(sense)
	require.Equal(t, uint8(0x21), s.ASC)
	_, _, sense = d.Execute([]byte{scsi.OpRead10, 0, 0}, nil, nil)
	s, _ = scsi.ParseSense(sense)
	require.Equal(t, uint8(0x24), s.ASC)
	_, _, sense = d.Execute(scsi.VPDInquiryCDB(0x80, 64), nil, in)
	require.NotNil(t, sense)
	_, st, _ = d.Execute(nil, nil, nil)
	require.Equal(t, uint8(scsi.StatusCheckCondition), st)
}

func TestDiskSparseData(t *testing.T) {
	d := scsisim.NewDisk(1<<40, 4096) // 4 PiB costs nothing until written
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i)
	}
	lba := uint64(1<<40 - 3)
	n, st, _ := d.Execute(scsi.Write16CDB(lba, 3), data, nil)
	require.Equal(t, uint8(0), st)
	require.Equal(t, len(data), n)
	got := make([]byte, len(data))
	d.ReadAt(got, int64(lba*4096))
	require.Equal(t, data, got)
	zero := make([]byte, 4096)
	d.Execute(scsi.Read16CDB(5, 1), nil, zero)
	require.Equal(t, make([]byte, 4096), zero)
}

func TestTransportHookAndUnplug(t *testing.T) {
	tr := scsisim.NewTransport(scsisim.NewDisk(8, 512))
	dev := scsi.NewDevice(tr)
	defer dev.Close()
	boom := errors.New("boom")
	tr.SetHook(func(ctx context.Context, cmd *scsi.Command) error { return boom })
	require.ErrorIs(t, dev.TestUnitReady(context.Background()), boom)
	tr.SetHook(nil)
	require.NoError(t, dev.TestUnitReady(context.Background()))

	started := make(chan struct{})
	tr.SetHook(func(ctx context.Context, cmd *scsi.Command) error {
		close(started)
		<-tr.Gone()
		return nil
	})
	errc := make(chan error, 1)
	go func() { _, err := dev.Inquiry(context.Background()); errc <- err }()
	<-started
	tr.Unplug()
	tr.Unplug()
	require.ErrorIs(t, <-errc, scsi.ErrNoDevice)
	require.ErrorIs(t, dev.TestUnitReady(context.Background()), scsi.ErrNoDevice)
}

// TestDiskContentsCostNothingUntilWritten checks WithContents: the disk
// reads as holding its contents, a partial write keeps the rest of them,
// and only a write makes the disk hold memory (Written).
func TestDiskContentsCostNothingUntilWritten(t *testing.T) {
	label := []byte("drvkit label\n")
	d := scsisim.NewDisk(1024, 512, scsisim.WithContents(label))
	got := make([]byte, 32)
	d.ReadAt(got, 0)
	require.Equal(t, append(label, make([]byte, 32-len(label))...), got)
	require.False(t, d.Written())

	dev := scsi.NewDevice(scsisim.NewTransport(d))
	blk := make([]byte, 512)
	blk[0] = 'X'
	require.NoError(t, dev.Write(context.Background(), 1, blk)) // block 1: same chunk as the label
	require.True(t, d.Written())
	d.ReadAt(got, 0)
	require.Equal(t, label, got[:len(label)], "the label survives a write beside it")
	d.ReadAt(got[:1], 512)
	require.Equal(t, byte('X'), got[0])

	// Heap per unwritten labelled disk: its description, not its storage.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	disks := make([]*scsisim.Disk, 1000)
	for i := range disks {
		disks[i] = scsisim.NewDisk(131072, 512, scsisim.WithContents(label))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perDisk := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(len(disks))
	require.Less(t, perDisk, int64(4096), "bytes per unwritten disk")
	runtime.KeepAlive(disks)
}

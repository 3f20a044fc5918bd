package scsi_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/stretchr/testify/require"
)

type botRig struct {
	backend *usbtest.Backend
	ms      *usbtest.MassStorage
	dev     *usbtest.Device
	disk    *scsitest.Disk
	handle  usb.Device
	bot     *scsi.BOT
	scsi    *scsi.Device
}

// newBOTRig plugs a mass-storage stick backed by an in-memory disk, opens
// it by vendor:product:serial and speaks BOT to it.
func newBOTRig(t testing.TB, blocks uint64) *botRig {
	t.Helper()
	ctx := context.Background()
	r := &botRig{backend: usbtest.New(), disk: scsitest.NewDisk(blocks, 512, scsitest.WithInquiry("QEMU", "QEMU HARDDISK", "2.5+", scsi.TypeDisk))}
	r.ms, r.dev = r.backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 2, Vendor: 0x46f4, Product: 0x0001, Serial: "1-0000:00:04.0-1"}, r.disk)
	sel, err := usb.ParseSelector("46f4:0001:1-0000:00:04.0-1")
	require.NoError(t, err)
	r.handle, err = r.backend.Open(ctx, sel)
	require.NoError(t, err)
	r.bot, err = scsi.NewBOT(ctx, r.handle)
	require.NoError(t, err)
	r.scsi = scsi.NewDevice(r.bot)
	t.Cleanup(func() {
		require.NoError(t, r.scsi.Close())
		require.NoError(t, r.handle.Close())
		require.NoError(t, r.backend.Close())
		require.Zero(t, r.backend.OpenHandles())
	})
	return r
}

func TestBOTConversation(t *testing.T) {
	ctx := context.Background()
	r := newBOTRig(t, 4096)
	require.Equal(t, "usbfs", r.dev.KernelDriver(0), "drvkit holds the interface")
	require.Equal(t, []usb.KernelDriver{{Interface: 0, Driver: "usb-storage"}}, r.handle.Detached())

	inq, err := r.scsi.Inquiry(ctx)
	require.NoError(t, err)
	require.Equal(t, "QEMU HARDDISK", inq.Product)
	require.NoError(t, r.scsi.TestUnitReady(ctx))
	c, err := r.scsi.ReadCapacity(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(4096), c.Blocks())

	data := bytes.Repeat([]byte("0123456789abcdef"), 32*8) // 8 blocks
	require.NoError(t, r.scsi.Write(ctx, 10, data))
	got := make([]byte, len(data))
	n, err := r.scsi.Read(ctx, 10, got)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.Equal(t, data, got)
	require.NoError(t, r.scsi.SynchronizeCache(ctx))

	// A failed command: BOT has no autosense, so the transport asks with
	// REQUEST SENSE and the typed error comes out.
	r.disk.FailNext(scsi.OpRead10, scsi.SenseMediumError, 0x11, 0x00)
	_, err = r.scsi.Read(ctx, 0, got[:512])
	require.ErrorIs(t, err, scsi.ErrMediumError)
	require.Equal(t, 1, r.disk.Count(scsi.OpRequestSense))

	st := r.bot.Stats()
	require.Zero(t, st.ResetRecovery)
	require.Zero(t, st.ClearHalts)
	require.Equal(t, r.ms.Commands(), st.Commands)

	// Releasing the interface gives usb-storage back.
	require.NoError(t, r.bot.Close())
	require.Equal(t, "usb-storage", r.dev.KernelDriver(0))
	require.Equal(t, []string{"detach usb-storage from interface 0", "attach usb-storage to interface 0"}, r.dev.Events())
	require.Empty(t, r.handle.Detached())
	_, err = r.scsi.Inquiry(ctx)
	require.ErrorIs(t, err, scsi.ErrClosed)
}

func TestBOTStallRecovery(t *testing.T) {
	ctx := context.Background()
	r := newBOTRig(t, 64)
	data := bytes.Repeat([]byte{0x5a}, 1024)
	require.NoError(t, r.scsi.Write(ctx, 0, data))
	got := make([]byte, 1024)

	// Stalled status phase: clear halt on bulk-in, read the CSW again.
	r.ms.StallNextCSW()
	_, err := r.scsi.Read(ctx, 0, got)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.Equal(t, 1, r.dev.ClearHalts(usbtest.MassStorageIn))

	// Data phase ended by a stall: clear it, then the CSW tells the residue.
	r.ms.StallNextDataIn()
	clear(got)
	_, err = r.scsi.Read(ctx, 0, got)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.Equal(t, 2, r.dev.ClearHalts(usbtest.MassStorageIn))
	require.False(t, r.dev.Halted(usbtest.MassStorageIn))
	require.Zero(t, r.ms.Resets())
	require.Equal(t, 2, r.bot.Stats().ClearHalts)
}

func TestBOTPhaseErrorAndBadTag(t *testing.T) {
	ctx := context.Background()
	r := newBOTRig(t, 64)
	data := bytes.Repeat([]byte{0xc3}, 512)

	r.ms.PhaseErrorNext()
	require.NoError(t, r.scsi.Write(ctx, 3, data), "phase error is recovered and the command retried")
	require.Equal(t, 1, r.ms.Resets())
	require.Equal(t, 1, r.dev.ClearHalts(usbtest.MassStorageIn))
	require.Equal(t, 1, r.dev.ClearHalts(usbtest.MassStorageOut))

	r.ms.BadTagNext()
	got := make([]byte, 512)
	_, err := r.scsi.Read(ctx, 3, got)
	require.NoError(t, err)
	require.Equal(t, data, got)
	require.Equal(t, 2, r.ms.Resets())
	st := r.bot.Stats()
	require.Equal(t, 2, st.ResetRecovery)
	require.Equal(t, 2, st.Retries)

	// Two phase errors in a row exhaust the single retry.
	r.ms.PhaseErrorNext()
	r.ms.PhaseErrorNext()
	err = r.scsi.TestUnitReady(ctx)
	require.ErrorIs(t, err, scsi.ErrPhaseError)
	require.NoError(t, r.scsi.TestUnitReady(ctx), "the transport is usable after recovery")
}

func TestBOTUnplugMidRead(t *testing.T) {
	ctx := context.Background()
	r := newBOTRig(t, 64)
	_, err := r.scsi.ReadCapacity(ctx)
	require.NoError(t, err)

	started := make(chan struct{})
	r.ms.SetDataInHook(func(ctx context.Context) error {
		close(started)
		<-ctx.Done() // the READ is in flight until the stick is pulled
		return ctx.Err()
	})
	errc := make(chan error, 1)
	go func() {
		_, err := r.scsi.Read(ctx, 0, make([]byte, 4096))
		errc <- err
	}()
	<-started
	r.dev.Unplug()
	err = <-errc
	require.ErrorIs(t, err, scsi.ErrNoDevice)
	require.ErrorIs(t, err, usb.ErrNoDevice)

	// Later calls fail the same way, without hanging.
	require.ErrorIs(t, r.scsi.TestUnitReady(ctx), scsi.ErrNoDevice)
	_, err = r.handle.Control(ctx, 0x80, 0x06, 0x0100, 0, make([]byte, 18))
	require.ErrorIs(t, err, usb.ErrNoDevice)
	// No driver can be re-attached to a device that is gone.
	require.Equal(t, []string{"detach usb-storage from interface 0"}, r.dev.Events())
	_, err = r.backend.Open(ctx, usb.Selector{Vendor: 0x46f4, Product: 1})
	require.ErrorIs(t, err, usb.ErrNotFound)
}

func TestBOTTimeoutRecovers(t *testing.T) {
	r := newBOTRig(t, 64)
	block := true
	r.ms.SetDataInHook(func(ctx context.Context) error {
		if block {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := r.scsi.Inquiry(ctx)
	require.ErrorIs(t, err, scsi.ErrTimeout)
	require.Equal(t, 1, r.ms.Resets(), "a timed-out transaction leaves the device out of step: reset recovery")
	block = false
	_, err = r.scsi.Inquiry(context.Background())
	require.NoError(t, err)
}

func TestBOTErrors(t *testing.T) {
	ctx := context.Background()
	b := usbtest.New()
	defer b.Close()
	b.Plug(usbtest.DeviceSpec{Bus: 1, Address: 3, Vendor: 1, Product: 2, Interfaces: []usbtest.InterfaceSpec{{Class: 3}}})
	h, err := b.Open(ctx, usb.Selector{Bus: 1, Address: 3})
	require.NoError(t, err)
	defer h.Close()
	_, err = scsi.NewBOT(ctx, h)
	require.ErrorContains(t, err, "no bulk-only mass-storage interface")

	// A second program claiming the same stick is refused, not robbed.
	r := newBOTRig(t, 8)
	h2, err := r.backend.Open(ctx, usb.Selector{Bus: 2, Address: 2})
	require.NoError(t, err)
	defer h2.Close()
	_, err = scsi.NewBOT(ctx, h2)
	require.ErrorIs(t, err, usb.ErrBusy)
	require.Equal(t, "usbfs", r.dev.KernelDriver(0))

	_, err = r.bot.Execute(ctx, &scsi.Command{CDB: make([]byte, 17)})
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)
}

func TestBOTReattachAll(t *testing.T) {
	r := newBOTRig(t, 8)
	require.Equal(t, "usbfs", r.dev.KernelDriver(0))
	require.NoError(t, r.backend.ReattachAll())
	require.Equal(t, "usb-storage", r.dev.KernelDriver(0))
	require.Equal(t, []string{"detach usb-storage from interface 0", "attach usb-storage to interface 0"}, r.dev.Events())
	// The transport no longer holds the interface.
	require.ErrorIs(t, r.scsi.TestUnitReady(context.Background()), usb.ErrNotClaimed)
}

// A stick pulled between a failed command and its REQUEST SENSE gives
// ErrNoDevice, not a CHECK CONDITION without sense data (seen on a real
// kernel: usbstorage's Start racing an unplug).
func TestBOTUnplugBeforeSense(t *testing.T) {
	ctx := context.Background()
	r := newBOTRig(t, 64)
	r.disk.FailNext(int(scsi.OpTestUnitReady), scsi.SenseUnitAttention, 0x28, 0)
	started := make(chan struct{})
	r.ms.SetDataInHook(func(ctx context.Context) error {
		close(started) // REQUEST SENSE's data phase: TUR has none
		<-ctx.Done()
		return ctx.Err()
	})
	errc := make(chan error, 1)
	go func() { errc <- r.scsi.TestUnitReady(ctx) }()
	<-started
	r.dev.Unplug()
	err := <-errc
	require.ErrorIs(t, err, scsi.ErrNoDevice)
	require.NotErrorIs(t, err, scsi.ErrBadSense)
}

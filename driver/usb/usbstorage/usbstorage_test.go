package usbstorage_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/driver/usb/usbtest"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/stretchr/testify/require"
)

type rig struct {
	r       *driver.Registry
	rec     *lifecycletest.Recorder
	backend *usbtest.Backend
	ms      *usbtest.MassStorage
	stick   *usbtest.Device
	disk    *scsitest.Disk
	nub     *driver.Service
}

func newRig(t *testing.T) *rig {
	leaktest.Check(t)
	x := &rig{r: driver.NewRegistry(), backend: usbtest.New(), disk: scsitest.NewDisk(2048, 512)}
	x.rec = lifecycletest.Record(t, x.r)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, x.r.Close(ctx))
		x.rec.Check(t)
		require.NoError(t, x.backend.Close())
		require.Zero(t, x.backend.OpenHandles(), "every usb handle closed")
	})
	x.ms, x.stick = x.backend.PlugMassStorage(usbtest.DeviceSpec{Bus: 2, Address: 3, Vendor: 0x46f4, Product: 1}, x.disk)
	require.NoError(t, x.r.RegisterPersonality(usbstorage.Personality(x.backend)))
	// What the hotplug bridge publishes for interface 2-1:1.0.
	x.nub = x.r.NewNub(usbstorage.NubClass, "2-1:1.0", driver.NewProperties(map[string]any{
		usbstorage.PropBusNum: 2, usbstorage.PropDevNum: 3, usbstorage.PropInterfaceNumber: 0,
		usbstorage.PropInterfaceClass: 0x08, usbstorage.PropInterfaceSubClass: 0x06, usbstorage.PropInterfaceProtocol: 0x50,
	}))
	require.NoError(t, x.r.Publish(nil, x.nub))
	return x
}

func (x *rig) instance(t *testing.T) *driver.Service {
	cl := x.nub.Clients()
	require.Len(t, cl, 1, "usbstorage matched the interface")
	require.Equal(t, usbstorage.Class, cl[0].Class())
	return cl[0]
}

func TestUSBStorageMethodsAndReattach(t *testing.T) {
	ctx := context.Background()
	x := newRig(t)
	svc := x.instance(t)
	require.Equal(t, "usbfs", x.stick.KernelDriver(0), "usb-storage detached while the driver runs")

	out, err := svc.Call(ctx, blockdev.MethodInquiry, nil)
	require.NoError(t, err)
	q, err := blockdev.DecodeInquiry(out)
	require.NoError(t, err)
	require.Equal(t, blockdev.Inquiry{Vendor: "DRVKIT", Product: "MEMDISK", Revision: "1.0"}, q)
	out, err = svc.Call(ctx, blockdev.MethodCapacity, nil)
	require.NoError(t, err)
	c, err := blockdev.DecodeCapacity(out)
	require.NoError(t, err)
	require.Equal(t, blockdev.Capacity{Blocks: 2048, BlockSize: 512}, c)

	data := bytes.Repeat([]byte("usbstorage"), 512*4/10+1)[:512*4]
	_, err = svc.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(100, data))
	require.NoError(t, err)
	out, err = svc.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(100, 4))
	require.NoError(t, err)
	require.Equal(t, data, out)

	// Bad input: a clear error, nothing sent.
	_, err = svc.Call(ctx, blockdev.MethodRead, []byte{1, 2})
	require.ErrorIs(t, err, blockdev.ErrBadRequest)
	_, err = svc.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 1<<30))
	require.ErrorIs(t, err, blockdev.ErrBadRequest)
	_, err = svc.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(2047, make([]byte, 1024)))
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)
	_, err = svc.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(0, make([]byte, 100)))
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)

	// Orderly termination gives usb-storage back.
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, x.nub.TerminateSync(tctx))
	require.Equal(t, "usb-storage", x.stick.KernelDriver(0))
	require.Equal(t, []string{"detach usb-storage from interface 0", "attach usb-storage to interface 0"}, x.stick.Events())
	require.Zero(t, x.backend.OpenHandles())
	_, err = svc.Call(ctx, blockdev.MethodInquiry, nil)
	require.ErrorIs(t, err, driver.ErrNotActive)
}

func TestUSBStorageSurpriseRemovalMidRead(t *testing.T) {
	ctx := context.Background()
	x := newRig(t)
	svc := x.instance(t)

	started := make(chan struct{})
	x.ms.SetDataInHook(func(ctx context.Context) error {
		close(started)
		<-ctx.Done() // the READ is in flight until the stick is pulled
		return ctx.Err()
	})
	errc := make(chan error, 1)
	go func() {
		_, err := svc.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 8))
		errc <- err
	}()
	<-started
	x.stick.Unplug() // the kernel sees the device go ...
	err := <-errc
	require.ErrorIs(t, err, driver.ErrNoDevice)
	require.ErrorIs(t, err, scsi.ErrNoDevice)

	// ... and hotplug terminates the nub: the lifecycle completes.
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, x.nub.TerminateSync(tctx))
	x.rec.Check(t)
	require.Zero(t, x.backend.OpenHandles())
	require.Equal(t, []string{"detach usb-storage from interface 0"}, x.stick.Events(), "nothing to re-attach to a vanished device")
	steps := x.rec.Steps(driver.StepStop, driver.StepFree)
	require.NotEmpty(t, steps)
}

func TestUSBStorageIgnoresOtherInterfaces(t *testing.T) {
	leaktest.Check(t)
	r := driver.NewRegistry()
	rec := lifecycletest.Record(t, r)
	b := usbtest.New()
	defer b.Close()
	require.NoError(t, r.RegisterPersonality(usbstorage.Personality(b)))
	hid := r.NewNub(usbstorage.NubClass, "1-1:1.0", driver.NewProperties(map[string]any{
		usbstorage.PropBusNum: 1, usbstorage.PropDevNum: 2, usbstorage.PropInterfaceNumber: 0,
		usbstorage.PropInterfaceClass: 0x03, usbstorage.PropInterfaceSubClass: 0x01, usbstorage.PropInterfaceProtocol: 0x02,
	}))
	require.NoError(t, r.Publish(nil, hid))
	require.Empty(t, hid.Clients())
	// A mass-storage nub whose device cannot be opened: Start fails, the
	// failure is logged and nothing leaks.
	ghost := r.NewNub(usbstorage.NubClass, "9-9:1.0", driver.NewProperties(map[string]any{
		usbstorage.PropBusNum: 9, usbstorage.PropDevNum: 9, usbstorage.PropInterfaceNumber: 0,
		usbstorage.PropInterfaceClass: 0x08, usbstorage.PropInterfaceSubClass: 0x06, usbstorage.PropInterfaceProtocol: 0x50,
	}))
	require.NoError(t, r.Publish(nil, ghost))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Close(ctx))
	rec.Check(t)
	require.Zero(t, b.OpenHandles())
}

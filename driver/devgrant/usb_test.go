//go:build linux

package devgrant_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/usb"
	"github.com/drvkit/drvkit/driver/usb/usbsim"
	"github.com/drvkit/drvkit/driver/usb/usbstorage"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

type usbRig struct {
	sim     *usbsim.Backend
	fake    *usbsim.Device
	storage *usbsim.MassStorage
	journal *usb.Journal
	g       *devgrant.Grant
	back    usb.Backend // the driver's resource
	props   map[string]any
}

// newUSBRig plugs a simulated stick (interface 0 bound to usb-storage) at
// bus 1 address 4 and grants its interface 0, the daemon's backend wrapped
// in the detach journal.
func newUSBRig(t testing.TB) *usbRig {
	sim := usbsim.New()
	t.Cleanup(func() { require.NoError(t, sim.Close()) })
	disk := scsisim.NewDisk(2048, 512, scsisim.WithInquiry("QEMU", "QEMU HARDDISK", "2.5+", scsi.TypeDisk))
	storage, fake := sim.PlugMassStorage(usbsim.DeviceSpec{Bus: 1, Address: 4, Vendor: 0x46f4, Product: 0x0001}, disk)
	j, err := usb.OpenJournal(filepath.Join(t.TempDir(), "usb-detached.json"))
	require.NoError(t, err)
	back := j.Wrap(sim)
	res := drivertable.NewResources()
	drivertable.Provide(res, usbstorage.BackendKey, func() (usb.Backend, error) { return back, nil })
	props := map[string]any{
		usbstorage.PropBusNum: 1, usbstorage.PropDevNum: 4, usbstorage.PropInterfaceNumber: 0,
		usbstorage.PropInterfaceClass: 8, usbstorage.PropInterfaceSubClass: 6, usbstorage.PropInterfaceProtocol: 0x50,
	}
	r := newRegistry(t)
	nub := publish(t, r, devgrant.USBProviderClass, "1-1:1.0", props)
	require.Equal(t, "usb-storage", fake.KernelDriver(0))
	g := grant(t, res, nub)
	require.Len(t, g.Files, 1)
	require.Equal(t, devgrant.File{Resource: "usb", Node: "/dev/bus/usb/001/004", Kind: devgrant.KindUSBSocket, File: g.Files[0].File}, g.Files[0])
	dback, err := devgrant.USBKey.From(devgrant.Resources(g.Files))
	require.NoError(t, err)
	return &usbRig{sim: sim, fake: fake, storage: storage, journal: j, g: g, back: dback, props: props}
}

func TestUSBGrantClaimsAndGivesBack(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newUSBRig(t)
	// The daemon claimed the interface: usb-storage is detached, and on
	// record in the journal before the driver runs.
	require.Equal(t, "usbfs", rig.fake.KernelDriver(0))
	require.Equal(t, []usb.JournalEntry{{Bus: 1, Address: 4, Vendor: 0x46f4, Product: 0x0001, Interface: 0, Driver: "usb-storage"}}, rig.journal.Entries())
	require.NoError(t, rig.g.Close())
	require.Equal(t, "usb-storage", rig.fake.KernelDriver(0), "re-attached when the grant ends")
	require.Empty(t, rig.journal.Entries())
}

func TestUSBOverSocket(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newUSBRig(t)
	ctx := context.Background()

	devs, err := rig.back.Devices(ctx)
	require.NoError(t, err)
	require.Len(t, devs, 1)
	require.Equal(t, uint16(0x46f4), devs[0].Vendor)

	_, err = rig.back.Open(ctx, usb.Selector{Bus: 1, Address: 5})
	require.ErrorIs(t, err, devgrant.ErrNotGranted)
	_, err = rig.back.Open(ctx, usb.Selector{Vendor: 0x1234, Product: 0x5678})
	require.ErrorIs(t, err, devgrant.ErrNotGranted)

	dev, err := rig.back.Open(ctx, usb.Selector{Vendor: 0x46f4, Product: 0x0001})
	require.NoError(t, err)
	require.Equal(t, 1, dev.Info().Bus)
	require.Equal(t, 4, dev.Info().Address)

	// Outside the grant: another interface, another interface's control
	// request, an endpoint of no granted interface, a device-wide change.
	require.ErrorIs(t, dev.ClaimInterface(ctx, 1, 0), devgrant.ErrNotGranted)
	require.ErrorIs(t, dev.ClaimInterface(ctx, 0, 1), usb.ErrNotSupported, "the daemon's claim chose the setting")
	_, err = dev.Control(ctx, 0x21, 0xff, 0, 1, nil)
	require.ErrorIs(t, err, devgrant.ErrNotGranted)
	_, err = dev.BulkTransfer(ctx, 0x83, make([]byte, 13))
	require.ErrorIs(t, err, devgrant.ErrNotGranted)
	_, err = dev.Control(ctx, 0x00, 0x09, 1, 0, nil) // SET_CONFIGURATION
	require.ErrorIs(t, err, devgrant.ErrNotGranted)

	// Within it: bulk-only transport, control (Get Max LUN, reset) and
	// bulk both ways, over the socket.
	bot, err := scsi.NewBOT(ctx, dev)
	require.NoError(t, err)
	sd := scsi.NewDevice(bot)
	q, err := sd.Inquiry(ctx)
	require.NoError(t, err)
	require.Equal(t, "QEMU HARDDISK", q.Product)
	data := make([]byte, 1024)
	for i := range data {
		data[i] = byte(i)
	}
	require.NoError(t, sd.Write(ctx, 7, data))
	got := make([]byte, 1024)
	_, err = sd.Read(ctx, 7, got)
	require.NoError(t, err)
	require.Equal(t, data, got)
	lun := make([]byte, 1)
	n, err := dev.Control(ctx, 0xa1, 0xfe, 0, 0, lun)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, dev.ClearHalt(ctx, usbsim.MassStorageIn))

	require.NoError(t, sd.Close()) // releases the interface: the daemon keeps its claim
	require.Equal(t, "usbfs", rig.fake.KernelDriver(0))
	require.NoError(t, dev.Close())
	require.ErrorIs(t, dev.Close(), usb.ErrClosed)
}

func TestUSBUnplugMidTransfer(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newUSBRig(t)
	ctx := context.Background()
	dev, err := rig.back.Open(ctx, usb.Selector{Bus: 1, Address: 4})
	require.NoError(t, err)
	defer dev.Close()
	bot, err := scsi.NewBOT(ctx, dev)
	require.NoError(t, err)
	sd := scsi.NewDevice(bot)
	defer sd.Close()
	inFlight := make(chan struct{})
	rig.storage.SetDataInHook(func(ctx context.Context) error {
		close(inFlight)
		<-ctx.Done()
		return ctx.Err()
	})
	done := make(chan error, 1)
	go func() { _, err := sd.Read(ctx, 0, make([]byte, 512)); done <- err }()
	<-inFlight
	rig.fake.Unplug()
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("read in flight did not end on unplug")
	}
	require.ErrorIs(t, err, usb.ErrNoDevice)
	_, err = dev.Control(ctx, 0xa1, 0xfe, 0, 0, make([]byte, 1))
	require.ErrorIs(t, err, usb.ErrNoDevice)
	require.NoError(t, rig.g.Close())
	require.Empty(t, rig.journal.Entries(), "nothing is owed to a device that is gone")
}

// usbstorage, unchanged, runs on the granted resource.
func TestUSBStorageDriverOnGrant(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newUSBRig(t)
	r := newRegistry(t)
	ps, err := usbstorage.Entry.Personalities(devgrant.Resources(rig.g.Files))
	require.NoError(t, err)
	require.NoError(t, r.RegisterPersonality(ps[0]))
	nub := publish(t, r, devgrant.USBProviderClass, "1-1:1.0", rig.props)
	require.Len(t, nub.Clients(), 1)
	out, err := nub.Clients()[0].Call(context.Background(), blockdev.MethodCapacity, nil)
	require.NoError(t, err)
	c, err := blockdev.DecodeCapacity(out)
	require.NoError(t, err)
	require.Equal(t, uint64(2048), c.Blocks)
}

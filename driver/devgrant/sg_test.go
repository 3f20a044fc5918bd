//go:build linux

package devgrant_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drvkit/drvkit/driver/devgrant"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsisim"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/refcount/leaktest"
)

type sgRig struct {
	fake *scsisim.Transport
	g    *devgrant.Grant
	open sg.Opener // the driver's resource
}

func newSGRig(t testing.TB) *sgRig {
	fake := scsisim.NewTransport(scsisim.NewDisk(2048, 512, scsisim.WithInquiry("QEMU", "QEMU HARDDISK", "2.5+", scsi.TypeDisk)))
	res := drivertable.NewResources()
	drivertable.Provide(res, sg.OpenerKey, func() (sg.Opener, error) {
		return func(path string) (scsi.Transport, error) {
			if path != "/dev/sg1" {
				return nil, &scsi.OpError{Op: "open " + path, Err: scsi.ErrNoDevice}
			}
			return fake, nil
		}, nil
	})
	r := newRegistry(t)
	nub := publish(t, r, devgrant.SCSIProviderClass, "0:0:0:0", map[string]any{sg.PropSGNode: "/dev/sg1", sg.PropType: 0})
	g := grant(t, res, nub)
	require.Len(t, g.Files, 1)
	require.Equal(t, devgrant.File{Resource: "sg", Node: "/dev/sg1", Kind: devgrant.KindSGSocket, File: g.Files[0].File}, g.Files[0])
	open, err := devgrant.SGKey.From(devgrant.Resources(g.Files))
	require.NoError(t, err)
	return &sgRig{fake: fake, g: g, open: open}
}

func TestSGOverSocket(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newSGRig(t)
	tr, err := rig.open("/dev/sg1")
	require.NoError(t, err)
	dev := scsi.NewDevice(tr)
	ctx := context.Background()

	q, err := dev.Inquiry(ctx)
	require.NoError(t, err)
	require.Equal(t, "QEMU", q.Vendor)
	require.Equal(t, "QEMU HARDDISK", q.Product)
	c, err := dev.ReadCapacity(ctx)
	require.NoError(t, err)
	require.Equal(t, uint64(2048), c.Blocks())

	// Data out then data in, through the socket both ways.
	data := bytes.Repeat([]byte("drvkit!\n"), 128) // two blocks
	require.NoError(t, dev.Write(ctx, 10, data))
	got := make([]byte, len(data))
	n, err := dev.Read(ctx, 10, got)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.Equal(t, data, got)

	// Large messages both ways (past the readers' small buffers), and
	// one past the socket's bound, refused before it is sent.
	big := make([]byte, 64<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	require.NoError(t, dev.Write(ctx, 100, big))
	back := make([]byte, len(big))
	_, err = dev.Read(ctx, 100, back)
	require.NoError(t, err)
	require.Equal(t, big, back)
	_, err = tr.Execute(ctx, &scsi.Command{CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 1, 0, 0}, Dir: scsi.DirIn, Data: make([]byte, devgrant.MaxData+512)})
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)

	// CHECK CONDITION and its sense cross: a READ(10) past the end.
	res, err := tr.Execute(ctx, &scsi.Command{CDB: []byte{0x28, 0, 0, 0, 0x10, 0, 0, 0, 1, 0}, Dir: scsi.DirIn, Data: make([]byte, 512)})
	require.NoError(t, err)
	require.Equal(t, scsi.StatusCheckCondition, res.Status)
	require.GreaterOrEqual(t, len(res.Sense), 14)
	require.Equal(t, byte(scsi.SenseIllegalRequest), res.Sense[2]&0x0f)

	// A command the daemon's side refuses before the device.
	_, err = tr.Execute(ctx, &scsi.Command{CDB: nil})
	require.ErrorIs(t, err, scsi.ErrInvalidRequest)

	_, err = rig.open("/dev/sg0")
	require.ErrorIs(t, err, devgrant.ErrNotGranted)
	require.Equal(t, "open /dev/sg0: device not granted to this driver", err.Error())

	require.NoError(t, tr.Close())
	_, err = tr.Execute(ctx, &scsi.Command{CDB: make([]byte, 6)})
	require.ErrorIs(t, err, scsi.ErrClosed)
	require.ErrorIs(t, tr.Close(), scsi.ErrClosed)
}

func TestSGDeviceGoneMidCommand(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newSGRig(t)
	tr, err := rig.open("/dev/sg1")
	require.NoError(t, err)
	defer tr.Close()
	started := make(chan struct{})
	rig.fake.SetHook(func(ctx context.Context, cmd *scsi.Command) error {
		close(started)
		<-rig.fake.Gone()
		return nil
	})
	done := make(chan error, 1)
	go func() {
		_, err := scsi.NewDevice(tr).Inquiry(context.Background())
		done <- err
	}()
	<-started
	rig.fake.Unplug()
	err = <-done
	require.ErrorIs(t, err, scsi.ErrNoDevice)
	_, err = tr.Execute(context.Background(), &scsi.Command{CDB: make([]byte, 6)})
	require.ErrorIs(t, err, scsi.ErrNoDevice)
}

// A command cancelled by the driver is cancelled on the daemon's side too.
func TestSGCancel(t *testing.T) {
	leaktest.Check(t)
	rig := newSGRig(t)
	tr, err := rig.open("/dev/sg1")
	require.NoError(t, err)
	defer tr.Close()
	cancelled := make(chan struct{})
	rig.fake.SetHook(func(ctx context.Context, cmd *scsi.Command) error {
		<-ctx.Done()
		close(cancelled)
		return ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = tr.Execute(ctx, &scsi.Command{CDB: make([]byte, 6)})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon's command was not cancelled")
	}
}

func TestSGGrantClosed(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newSGRig(t)
	tr, err := rig.open("/dev/sg1")
	require.NoError(t, err)
	defer tr.Close()
	require.NoError(t, rig.g.Close())
	_, err = tr.Execute(context.Background(), &scsi.Command{CDB: make([]byte, 6)})
	require.ErrorIs(t, err, scsi.ErrNoDevice)
}

// The sg sample driver, unchanged, serves a client through the grant.
func TestSGDriverOnGrant(t *testing.T) {
	leaktest.Check(t)
	checkFDs(t)
	rig := newSGRig(t)
	r := newRegistry(t)
	ps, err := sg.Entry.Personalities(devgrant.Resources(rig.g.Files))
	require.NoError(t, err)
	require.NoError(t, r.RegisterPersonality(ps[0]))
	nub := publish(t, r, devgrant.SCSIProviderClass, "0:0:0:0", map[string]any{sg.PropSGNode: "/dev/sg1", sg.PropType: 0})
	require.Len(t, nub.Clients(), 1)
	out, err := nub.Clients()[0].Call(context.Background(), blockdev.MethodInquiry, nil)
	require.NoError(t, err)
	q, err := blockdev.DecodeInquiry(out)
	require.NoError(t, err)
	require.Equal(t, blockdev.Inquiry{Vendor: "QEMU", Product: "QEMU HARDDISK", Revision: "2.5+", Type: 0}, q)
}

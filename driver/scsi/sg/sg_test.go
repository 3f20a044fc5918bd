package sg_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/lifecycletest"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/blockdev"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/refcount/leaktest"
	"github.com/stretchr/testify/require"
)

// nodes is a fake /dev: sg node path → in-memory transport.
type nodes struct {
	mu sync.Mutex
	m  map[string]*scsitest.Transport
}

func (n *nodes) open(path string) (scsi.Transport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.m[path]
	if !ok {
		return nil, &scsi.OpError{Op: "open " + path, Err: scsi.ErrNoDevice}
	}
	return t, nil
}

func scsiNub(r *driver.Registry, hctl string, typ int, node string) *driver.Service {
	return r.NewNub(sg.NubClass, hctl, driver.NewProperties(map[string]any{
		sg.PropType: typ, sg.PropSGNode: node, "vendor": "QEMU", "model": "QEMU HARDDISK",
	}))
}

func setup(t *testing.T) (*driver.Registry, *lifecycletest.Recorder, *nodes) {
	leaktest.Check(t)
	r := driver.NewRegistry()
	rec := lifecycletest.Record(t, r)
	n := &nodes{m: map[string]*scsitest.Transport{
		"/dev/sg0": scsitest.NewTransport(scsitest.NewDisk(1024, 512)),
		"/dev/sg1": scsitest.NewTransport(scsitest.NewDisk(256, 2048, scsitest.WithInquiry("QEMU", "QEMU DVD-ROM", "2.5+", scsi.TypeCDROM))),
		"/dev/sg2": scsitest.NewTransport(scsitest.NewDisk(8, 512)),
	}}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, r.Close(ctx))
		rec.Check(t)
	})
	require.NoError(t, r.RegisterPersonality(sg.Personality(n.open)))
	return r, rec, n
}

func TestSGMatching(t *testing.T) {
	ctx := context.Background()
	r, _, _ := setup(t)
	disk := scsiNub(r, "0:0:0:0", 0, "/dev/sg0")
	cd := scsiNub(r, "0:0:1:0", 5, "/dev/sg1")
	tape := scsiNub(r, "0:0:2:0", 1, "/dev/sg2")
	nosg := scsiNub(r, "0:0:3:0", 0, "")
	for _, n := range []*driver.Service{disk, cd, tape, nosg} {
		require.NoError(t, r.Publish(nil, n))
	}
	require.Len(t, disk.Clients(), 1)
	require.Len(t, cd.Clients(), 1)
	require.Empty(t, tape.Clients(), "type 1 (tape) is not ours")
	require.Empty(t, nosg.Clients(), "no sg node, nothing to open")

	out, err := cd.Clients()[0].Call(ctx, blockdev.MethodInquiry, nil)
	require.NoError(t, err)
	q, _ := blockdev.DecodeInquiry(out)
	require.Equal(t, blockdev.Inquiry{Vendor: "QEMU", Product: "QEMU DVD-ROM", Revision: "2.5+", Type: 5}, q)

	svc := disk.Clients()[0]
	data := bytes.Repeat([]byte{0xd5}, 1024)
	_, err = svc.Call(ctx, blockdev.MethodWrite, blockdev.EncodeWrite(7, data))
	require.NoError(t, err)
	out, err = svc.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(7, 2))
	require.NoError(t, err)
	require.Equal(t, data, out)
	out, err = svc.Call(ctx, blockdev.MethodCapacity, nil)
	require.NoError(t, err)
	c, _ := blockdev.DecodeCapacity(out)
	require.Equal(t, blockdev.Capacity{Blocks: 1024, BlockSize: 512}, c)
}

func TestSGSurpriseRemovalMidRead(t *testing.T) {
	ctx := context.Background()
	r, rec, n := setup(t)
	nub := scsiNub(r, "0:0:0:0", 0, "/dev/sg0")
	require.NoError(t, r.Publish(nil, nub))
	svc := nub.Clients()[0]
	tr := n.m["/dev/sg0"]

	started := make(chan struct{})
	var once sync.Once
	tr.SetHook(func(ctx context.Context, cmd *scsi.Command) error {
		if cmd.CDB[0] != scsi.OpRead10 {
			return nil
		}
		once.Do(func() { close(started) })
		select { // in flight until the disk goes away
		case <-tr.Gone():
		case <-ctx.Done():
			return ctx.Err()
		}
		return nil
	})
	errc := make(chan error, 1)
	go func() {
		_, err := svc.Call(ctx, blockdev.MethodRead, blockdev.EncodeRead(0, 4))
		errc <- err
	}()
	<-started
	tr.Unplug()
	err := <-errc
	require.ErrorIs(t, err, driver.ErrNoDevice)
	require.ErrorIs(t, err, scsi.ErrNoDevice)
	_, err = svc.Call(ctx, blockdev.MethodInquiry, nil)
	require.ErrorIs(t, err, driver.ErrNoDevice)

	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, nub.TerminateSync(tctx))
	rec.Check(t)
}

func TestSGOpenFails(t *testing.T) {
	r, _, _ := setup(t)
	ghost := scsiNub(r, "1:0:0:0", 0, "/dev/sg9")
	require.NoError(t, r.Publish(nil, ghost))
	for _, c := range ghost.Clients() {
		require.False(t, c.State().Active, fmt.Sprintf("%s must not be active", c))
	}
}

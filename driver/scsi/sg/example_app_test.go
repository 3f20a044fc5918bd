package sg_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
)

// labelDriver is an application's own SCSI driver: it claims disks by
// their sg node, reads the volume label in block 0 and offers it to the
// rest of the application as the client method "label".
type labelDriver struct {
	open func(string) (scsi.Transport, error)
	dev  atomic.Pointer[scsi.Device]
}

func (d *labelDriver) Start(ctx context.Context, s *driver.Service) error {
	node, _ := s.Providers()[0].Properties().String(sg.PropSGNode)
	t, err := d.open(node) // scsi.OpenSG(node) on a real machine
	if err != nil {
		return err
	}
	dev := scsi.NewDevice(t)
	if err := s.Manage(dev); err != nil { // closed after Stop, even on surprise removal
		return err
	}
	d.dev.Store(dev)
	return nil
}

func (d *labelDriver) Stop(s *driver.Service) { d.dev.Store(nil) }

func (d *labelDriver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		"label": func(ctx context.Context, s *driver.Service, _ []byte) ([]byte, error) {
			c, err := d.dev.Load().Capacity(ctx)
			if err != nil {
				return nil, err
			}
			b := make([]byte, c.BlockSize)
			if _, err := d.dev.Load().Read(ctx, 0, b); err != nil {
				return nil, err
			}
			return []byte(strings.TrimRight(string(b[:16]), "\x00")), nil
		},
	}
}

// Example_application embeds drvkit in a SCSI application, in-process: a
// registry, the application's own driver, and the device events that the
// hotplug bridge turns into SCSIDevice nubs (published by hand here; an
// in-memory disk stands in for /dev/sg0). The disk is then pulled in the
// middle of the application's work.
func Example_application() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	disk := scsitest.NewDisk(1024, 512)
	disk.Execute([]byte{scsi.OpWrite10, 0, 0, 0, 0, 0, 0, 0, 1, 0}, append([]byte("HOLIDAY-2026"), make([]byte, 500)...), nil)
	sg0 := scsitest.NewTransport(disk)
	open := func(path string) (scsi.Transport, error) {
		if path != "/dev/sg0" {
			return nil, scsi.ErrNoDevice
		}
		return sg0, nil
	}

	r := driver.NewRegistry()
	defer r.Close(ctx)
	_ = r.RegisterPersonality(driver.Personality{
		Name: "labels", ProviderClass: sg.NubClass,
		Match: []driver.Match{driver.MatchValue(sg.PropType, 0)},
		New:   func() driver.Driver { return &labelDriver{open: open} },
	})

	// hotplug: "add" for 0:0:0:0 with its sg node.
	nub := r.NewNub(sg.NubClass, "0:0:0:0", driver.NewProperties(map[string]any{
		sg.PropType: 0, sg.PropSGNode: "/dev/sg0", "vendor": "QEMU", "model": "QEMU HARDDISK"}))
	if err := r.Publish(nil, nub); err != nil {
		fmt.Println(err)
		return
	}
	labels := nub.Clients()[0]
	label, err := labels.Call(ctx, "label", nil)
	fmt.Printf("label %q, err %v\n", label, err)

	// hotplug: the disk is gone ("remove"), and the bridge terminates it.
	sg0.Unplug()
	_, err = labels.Call(ctx, "label", nil)
	fmt.Println("after unplug:", errors.Is(err, scsi.ErrNoDevice))
	fmt.Println("terminated:", nub.TerminateSync(ctx))
	// Output:
	// label "HOLIDAY-2026", err <nil>
	// after unplug: true
	// terminated: <nil>
}

package sg_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/scsi"
	"github.com/drvkit/drvkit/driver/scsi/scsitest"
	"github.com/drvkit/drvkit/driver/scsi/sg"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/sim"
)

// labelDriver is an application's own SCSI driver: it claims the disks
// the hotplug bridge publishes, opens their sg node and offers the rest of
// the application two client methods, "inquiry" and "label" (the volume
// label in block 0).
type labelDriver struct {
	open sg.Opener // sg.OpenSG on a real machine
	dev  atomic.Pointer[scsi.Device]
}

func (d *labelDriver) Start(ctx context.Context, s *driver.Service) error {
	node, _ := s.Providers()[0].Properties().String(scsibus.PropSG)
	t, err := d.open(node)
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
		"inquiry": func(ctx context.Context, s *driver.Service, _ []byte) ([]byte, error) {
			id, err := d.dev.Load().Inquiry(ctx)
			return []byte(id.Vendor + " " + id.Product), err
		},
		"label": func(ctx context.Context, s *driver.Service, _ []byte) ([]byte, error) {
			b := make([]byte, 512)
			if _, err := d.dev.Load().Read(ctx, 0, b); err != nil {
				return nil, err
			}
			return []byte(strings.TrimRight(string(b[:16]), "\x00")), nil
		},
	}
}

// appClient is the application's side of an open disk: it closes the disk
// when the registry asks (the disk is going away) and reports its end.
type appClient struct {
	disk *driver.Service
	gone chan string
}

func (a *appClient) Message(self *driver.Service, m driver.Message) error {
	switch {
	case m.Type == driver.ServiceIsTerminated && m.From == a.disk.ID():
		a.gone <- "terminated"
	case m.Type == driver.ServiceIsRequestingClose:
		return a.disk.Close(self)
	}
	return nil
}

// Example_application embeds drvkit in a SCSI application, in-process:
// a registry, the hotplug bridge fed by a device source, and the
// application's own driver. The source is the simulator (hotplug.NewNetlink
// on a real machine): a disk appears on the virtio-scsi host, the
// application opens it through the registry and reads it, then the disk
// is pulled and every service is freed. An in-memory disk stands in for
// the LUN behind /dev/sg0, the node the simulated kernel gives it.
func Example_application() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The machine.
	disk := scsitest.NewDisk(1024, 512, scsitest.WithInquiry("ACME", "PHOTO VAULT", "1.0", scsi.TypeDisk))
	disk.Execute([]byte{scsi.OpWrite10, 0, 0, 0, 0, 0, 0, 0, 1, 0}, append([]byte("HOLIDAY-2026"), make([]byte, 500)...), nil)
	open := func(node string) (scsi.Transport, error) {
		if node != "/dev/sg0" {
			return nil, fmt.Errorf("open %s: %w", node, scsi.ErrNoDevice)
		}
		return scsitest.NewTransport(disk), nil
	}
	sysfs, _ := os.MkdirTemp("", "sysfs") // the simulator's sysfs, read by the bridge
	defer os.RemoveAll(sysfs)
	boot, _ := sim.ParseScenarioString("boot.scn", `scsi add 0:0:1:0 type=0 vendor=ACME model="PHOTO VAULT"`)
	src, _ := sim.New(boot, sim.Config{SysfsDir: sysfs, Live: true})

	// The application: a registry with its driver, and the hotplug bridge.
	r := driver.NewRegistry()
	defer r.Close(ctx)
	started := make(chan uint64, 1)
	stopWatch := r.SubscribeLifecycle(func(e driver.LifecycleEvent) {
		if e.Class == "LabelDisk" && e.Step == driver.StepStart && e.Err == "" {
			started <- e.ServiceID // a disk is ready for the application
		}
	})
	defer stopWatch()
	_ = r.RegisterPersonality(driver.Personality{
		Name: "labels", Class: "LabelDisk", ProviderClass: scsibus.ClassDevice,
		Match: []driver.Match{driver.MatchValue(scsibus.PropType, scsi.TypeDisk)},
		New:   func() driver.Driver { return &labelDriver{open: open} },
	})
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: sysfs})
	ran := make(chan error, 1)
	go func() { ran <- b.Run(ctx, src) }()

	// Open the disk once its driver has started, and read it.
	var id uint64
	select {
	case id = <-started:
	case <-ctx.Done():
		fmt.Println("no disk:", ctx.Err())
		return
	}
	disk0, release, _ := r.Lookup(id)
	app := &appClient{disk: disk0, gone: make(chan string, 1)}
	client, err := r.AttachClient(disk0, "LabelApp", "app", app)
	release() // the client's attachment holds the disk now
	if err == nil {
		err = disk0.Open(client, driver.OpenOptions{Exclusive: true})
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	nub := disk0.Providers()[0]
	name := disk0.Class() + " " + nub.Name()
	node, _ := nub.Properties().String(scsibus.PropSG)
	fmt.Println(name, "on", node)
	inq, err := disk0.Call(ctx, "inquiry", nil)
	fmt.Printf("inquiry %q, err %v\n", inq, err)
	label, err := disk0.Call(ctx, "label", nil)
	fmt.Printf("label %q, err %v\n", label, err)

	// The disk is pulled: the kernel removes the LUN, the bridge
	// terminates its nub, and the application is asked to close it.
	unplug, _ := sim.ParseScenarioFragment("unplug", "scsi remove 0:0:1:0")
	if err := src.Inject(ctx, unplug); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(name, <-app.gone) // from here on the application forgets disk0

	// Shut down: the device source, the bridge, and wait for the frees.
	_ = src.Close()
	fmt.Println("source:", <-ran)
	_ = b.Close()
	_ = r.WaitQuiet(ctx)
	fmt.Println("services left:", len(r.Services())-1) // all but the root
	// Output:
	// LabelDisk 0:0:1:0 on /dev/sg0
	// inquiry "ACME PHOTO VAULT", err <nil>
	// label "HOLIDAY-2026", err <nil>
	// LabelDisk 0:0:1:0 terminated
	// source: source closed
	// services left: 0
}

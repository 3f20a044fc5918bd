package hotplug_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
	"github.com/drvkit/drvkit/hotplug/buses"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/sim"
	"github.com/drvkit/drvkit/hotplug/usbbus"
)

func ExampleParse() {
	ev, err := hotplug.Parse([]byte("add@/devices/pci0000:00/0000:00:02.0/usb2/2-2\x00ACTION=add\x00" +
		"DEVPATH=/devices/pci0000:00/0000:00:02.0/usb2/2-2\x00SUBSYSTEM=usb\x00MAJOR=189\x00MINOR=130\x00" +
		"DEVNAME=bus/usb/002/003\x00DEVTYPE=usb_device\x00PRODUCT=46f4/1/0\x00TYPE=0/0/0\x00BUSNUM=002\x00" +
		"DEVNUM=003\x00SEQNUM=746\x00"))
	if err != nil {
		fmt.Println(err)
		return
	}
	d, _ := ev.USBDevice()
	fmt.Println(ev.Action, ev.Subsystem, ev.Seqnum)
	fmt.Printf("%s bus %d dev %d %04x:%04x\n", d.Port, d.BusNum, d.DevNum, d.Vendor, d.Product)

	_, err = hotplug.Parse([]byte("add@/devices/x\x00ACTION=remove\x00"))
	fmt.Println(err)
	// Output:
	// add usb 746
	// 2-2 bus 2 dev 3 46f4:0001
	// malformed uevent at byte 15 (ACTION): ACTION="remove" disagrees with header
}

func ExampleNewNetlink() {
	src, err := hotplug.NewNetlink(hotplug.NetlinkConfig{Coldplug: true, Classes: buses.Classes()})
	if err != nil {
		fmt.Println(err) // not root, or not Linux
		return
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for {
		ev, err := src.Next(ctx)
		if err != nil {
			return // ctx done or source closed
		}
		fmt.Println(ev.Origin, ev)
	}
}

func ExampleNewBridge() {
	ctx := context.Background()
	r := driver.NewRegistry()
	defer r.Close(ctx)

	// A simulated stick; the bridge publishes its nubs into the registry.
	sc, _ := sim.ParseScenarioString("stick.scn",
		`plug usb 2-1 vid=0781 pid=5567 manufacturer=SanDisk product="Cruzer Blade" serial=4C53 ifaces=08/06/50`)
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	src, _ := sim.New(sc, sim.Config{SysfsDir: dir})
	defer src.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{Buses: buses.Default(), SysfsRoot: dir})
	defer b.Close()
	if err := b.Run(ctx, src); err != nil {
		fmt.Println(err)
		return
	}
	_ = b.Flush(ctx)

	var show func(s *driver.Service, indent string)
	show = func(s *driver.Service, indent string) {
		for _, c := range s.Clients() {
			p := c.Properties()
			serial, _ := p.String(usbbus.PropSerial)
			sg, _ := p.String(scsibus.PropSG)
			fmt.Println(indent + strings.TrimSpace(c.Class()+" "+c.Name()+" "+serial+sg))
			show(c, indent+"  ")
		}
	}
	show(r.Root(), "")
	// Output:
	// USBDevice 2-1 4C53
	//   USBInterface 2-1:1.0
	//     SCSIDevice 1:0:0:0 /dev/sg0
}

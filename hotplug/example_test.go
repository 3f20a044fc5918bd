package hotplug_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/hotplug"
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

func ExampleNewSim() {
	sc, err := hotplug.ParseScenarioString("example.scn", `
plug usb 1-1 vid=0781 pid=5567 serial=X ifaces=08/06/50
unplug 1-1
`)
	if err != nil {
		fmt.Println(err)
		return
	}
	sim, _ := hotplug.NewSim(sc, hotplug.SimConfig{})
	defer sim.Close()
	for {
		ev, err := sim.Next(context.Background())
		if err != nil {
			break // io.EOF at the end of the scenario
		}
		if ev.Subsystem == "usb" || ev.Subsystem == "block" || ev.Subsystem == "scsi_generic" {
			fmt.Println(ev.Action, ev.Subsystem, ev.Name())
		}
	}
	// Output:
	// add usb 1-1
	// add usb 1-1:1.0
	// bind usb 1-1:1.0
	// bind usb 1-1
	// add scsi_generic sg0
	// add block sda
	// remove scsi_generic sg0
	// remove block sda
	// unbind usb 1-1:1.0
	// remove usb 1-1:1.0
	// unbind usb 1-1
	// remove usb 1-1
}

func ExampleParseScenario_error() {
	_, err := hotplug.ParseScenarioString("bad.scn", "plug usb 2-1 vid=46f4 pid=0001 ifaces=08/06/50\nunplug 2-9\n")
	fmt.Println(err)
	// Output: bad.scn:2: unplug: no device at port 2-9
}

func ExampleNewNetlink() {
	src, err := hotplug.NewNetlink(hotplug.NetlinkConfig{Coldplug: true})
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
	sc, _ := hotplug.ParseScenarioString("stick.scn",
		`plug usb 2-1 vid=0781 pid=5567 manufacturer=SanDisk product="Cruzer Blade" serial=4C53 ifaces=08/06/50`)
	dir, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(dir)
	sim, _ := hotplug.NewSim(sc, hotplug.SimConfig{SysfsDir: dir})
	defer sim.Close()
	b := hotplug.NewBridge(r, hotplug.BridgeConfig{SysfsRoot: dir})
	defer b.Close()
	if err := b.Run(ctx, sim); err != nil {
		fmt.Println(err)
		return
	}
	_ = b.Flush(ctx)

	var show func(s *driver.Service, indent string)
	show = func(s *driver.Service, indent string) {
		for _, c := range s.Clients() {
			p := c.Properties()
			serial, _ := p.String(hotplug.PropSerial)
			sg, _ := p.String(hotplug.PropSG)
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

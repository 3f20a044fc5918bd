//go:build linux && cgo

package main

import (
	"fmt"
	"sort"

	"github.com/drvkit/drvkit/e2e/agentproto"
	"github.com/google/gousb"
)

// listUSB enumerates through libusb, opens every device and reads its
// strings: the same path drvkit's USB transport takes.
func listUSB() (devs []agentproto.USBDevice, err error) {
	defer func() {
		// gousb panics when libusb_init fails instead of returning.
		if r := recover(); r != nil {
			err = fmt.Errorf("libusb: %v", r)
		}
	}()
	ctx := gousb.NewContext()
	defer ctx.Close()
	type key struct{ bus, addr int }
	byKey := map[key]*agentproto.USBDevice{}
	var order []key
	opened, openErr := ctx.OpenDevices(func(d *gousb.DeviceDesc) bool {
		k := key{d.Bus, d.Address}
		byKey[k] = &agentproto.USBDevice{
			Bus: d.Bus, Address: d.Address, Port: d.Port,
			VID: fmt.Sprintf("%04x", uint16(d.Vendor)), PID: fmt.Sprintf("%04x", uint16(d.Product)),
			Class: d.Class.String(), Speed: d.Speed.String(),
		}
		order = append(order, k)
		return true
	})
	seen := map[key]bool{}
	for _, d := range opened {
		k := key{d.Desc.Bus, d.Desc.Address}
		seen[k] = true
		u := byKey[k]
		u.Manufacturer, _ = d.Manufacturer()
		u.Product, _ = d.Product()
		u.Serial, _ = d.SerialNumber()
		d.Close()
	}
	for _, k := range order {
		u := byKey[k]
		if !seen[k] && openErr != nil {
			u.OpenError = openErr.Error()
		}
		devs = append(devs, *u)
	}
	sort.Slice(devs, func(i, j int) bool {
		if devs[i].Bus != devs[j].Bus {
			return devs[i].Bus < devs[j].Bus
		}
		return devs[i].Address < devs[j].Address
	})
	return devs, nil
}

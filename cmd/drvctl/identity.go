package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/hotplug/hidbus"
	"github.com/drvkit/drvkit/hotplug/scsibus"
	"github.com/drvkit/drvkit/hotplug/usbbus"
	"github.com/drvkit/drvkit/userclient/server"
)

// What a tree line says a service is, as lsusb and lsscsi would: a USB
// device's vendor:product, strings and speed; a SCSI device's type, vendor
// and model; a HID device's vendor:product and name; who a user client
// serves. Each class registers how it is told; a class with none shows
// its state alone.

// identities maps a service class to what identifies one of its services,
// from its properties ("" when they say nothing).
var identities = map[string]func(props map[string]any) string{}

func registerIdentity(class string, f func(props map[string]any) string) { identities[class] = f }

func init() {
	registerIdentity(usbbus.ClassDevice, usbDeviceIdentity)
	registerIdentity(usbbus.ClassInterface, usbInterfaceIdentity)
	registerIdentity(scsibus.ClassDevice, scsiIdentity)
	registerIdentity(hidbus.ClassDevice, hidIdentity)
	registerIdentity(server.UserClientClass, userClientIdentity)
}

// identity is e's identity, or "".
func (e *serviceEntry) identity() string {
	if f, ok := identities[e.Class]; ok {
		return f(e.Properties)
	}
	return ""
}

// propInt reads an integer property, whether it came as a Go integer (in
// the daemon) or a JSON number.
func propInt(props map[string]any, key string) (int64, bool) {
	switch v := props[key].(type) {
	case float64:
		return int64(v), v == float64(int64(v))
	case int64:
		return v, true
	case uint64:
		return int64(v), true
	case int:
		return int64(v), true
	}
	return 0, false
}

func propString(props map[string]any, key string) string {
	s, _ := props[key].(string)
	return s
}

// quoted is s Go-quoted (one field however many blanks it has), or "".
func quoted(s string) string {
	if s = strings.TrimSpace(s); s == "" {
		return ""
	}
	return strconv.Quote(s)
}

// vidPid is "0781:5567", as lsusb prints it.
func vidPid(props map[string]any) string {
	v, ok1 := propInt(props, usbbus.PropVendorID)
	p, ok2 := propInt(props, usbbus.PropProductID)
	if !ok1 || !ok2 {
		return ""
	}
	return fmt.Sprintf("%04x:%04x", v, p)
}

func join(parts ...string) string {
	out := parts[:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

func usbDeviceIdentity(props map[string]any) string {
	name := join(propString(props, usbbus.PropManufacturer), propString(props, usbbus.PropProduct))
	speed := ""
	if s := propString(props, usbbus.PropSpeed); s != "" {
		speed = s + "M" // as lsusb -t: 480M, 5000M
	}
	id := vidPid(props)
	if id != "" {
		id = "usb " + id
	}
	return join(id, quoted(name), speed)
}

// usbClassNames are the interface classes an operator meets most.
var usbClassNames = map[int64]string{
	0x01: "audio", 0x02: "comm", 0x03: "hid", 0x05: "physical", 0x06: "image", 0x07: "printer",
	0x08: "mass storage", 0x09: "hub", 0x0a: "cdc data", 0x0b: "smart card", 0x0e: "video",
	0xe0: "wireless", 0xef: "misc", 0xfe: "app specific", 0xff: "vendor specific",
}

func usbInterfaceIdentity(props map[string]any) string {
	c, ok := propInt(props, usbbus.PropIfaceClass)
	if !ok {
		return vidPid(props)
	}
	sub, _ := propInt(props, usbbus.PropIfaceSub)
	proto, _ := propInt(props, usbbus.PropIfaceProto)
	cls := fmt.Sprintf("%02x/%02x/%02x", c, sub, proto)
	if n, ok := usbClassNames[c]; ok {
		cls += " (" + n + ")"
	}
	id := vidPid(props)
	if id != "" {
		id = "usb " + id
	}
	return join(id, "class "+cls)
}

// scsiTypes names the peripheral device types of SPC (as lsscsi does).
var scsiTypes = map[int64]string{
	0x00: "disk", 0x01: "tape", 0x02: "printer", 0x03: "processor", 0x04: "worm", 0x05: "cd/dvd",
	0x07: "optical", 0x08: "changer", 0x0c: "storage", 0x0d: "enclosure", 0x0e: "rbc", 0x11: "osd",
}

func scsiIdentity(props map[string]any) string {
	kind := ""
	if t, ok := propInt(props, scsibus.PropType); ok {
		if n, ok := scsiTypes[t]; ok {
			kind = n
		} else {
			kind = fmt.Sprintf("type %d", t)
		}
	}
	rest := join(kind, quoted(propString(props, scsibus.PropVendor)), quoted(propString(props, scsibus.PropModel)))
	if rest == "" {
		return ""
	}
	return "scsi " + rest
}

func hidIdentity(props map[string]any) string {
	id := vidPid(props)
	if id != "" {
		id = "hid " + id
	}
	return join(id, quoted(propString(props, hidbus.PropName)))
}

func userClientIdentity(props map[string]any) string {
	pid, ok := propInt(props, server.PropPID)
	if !ok {
		return "" // another user's process: shown to admins only
	}
	uid, _ := propInt(props, server.PropUID)
	return join(fmt.Sprintf("pid %d uid %d", pid, uid), quoted(propString(props, server.PropComm)))
}

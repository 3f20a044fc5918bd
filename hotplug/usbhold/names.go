package usbhold

import (
	"strconv"
	"strings"
)

// The kernel's names: a root hub is "usbN"; a device "N-P[.P...]"; an
// interface "N-P[.P...]:C.I". Names are checked before they become sysfs
// paths or are written to sysfs: they come from uevents and from a state
// file.

// rootHubBus returns N of "usbN".
func rootHubBus(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "usb")
	if !ok {
		return 0, false
	}
	return number(s)
}

// number parses a decimal of 1 to 3 digits without sign or leading zero.
func number(s string) (int, bool) {
	if s == "" || len(s) > 3 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// deviceBus returns the bus of a device name "N-P[.P...]" ("N-0" is the
// root hub's own device as interfaces name it).
func deviceBus(name string) (int, bool) {
	bus, ports, ok := strings.Cut(name, "-")
	if !ok {
		return 0, false
	}
	n, ok := number(bus)
	if !ok || n == 0 {
		return 0, false
	}
	for _, p := range strings.Split(ports, ".") {
		if _, ok := number(p); !ok {
			return 0, false
		}
	}
	return n, true
}

// interfaceBus checks an interface name "N-P[.P...]:C.I" and returns its
// bus and its device's name.
func interfaceBus(name string) (bus int, device string, ok bool) {
	dev, ci, ok := strings.Cut(name, ":")
	if !ok {
		return 0, "", false
	}
	c, i, ok := strings.Cut(ci, ".")
	if !ok {
		return 0, "", false
	}
	if _, ok := number(c); !ok {
		return 0, "", false
	}
	if _, ok := number(i); !ok {
		return 0, "", false
	}
	bus, ok = deviceBus(dev)
	return bus, dev, ok
}

func rootHub(bus int) string { return "usb" + strconv.Itoa(bus) }

// interfaceNumber returns I of an interface name "N-P[.P...]:C.I".
func interfaceNumber(name string) (int, bool) {
	if _, _, ok := interfaceBus(name); !ok {
		return 0, false
	}
	return number(name[strings.LastIndexByte(name, '.')+1:])
}

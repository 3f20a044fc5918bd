package usbhold

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// kernel is what the hold reads and changes; sysfs on a real machine, a
// fake in tests that checks the kernel's rules (an unauthorized interface
// is never bound, authorizing does not probe).
type kernel interface {
	// RootHubs lists "usbN" of every root hub.
	RootHubs() ([]string, error)
	AuthorizedDefault(hub string) (bool, error)
	SetAuthorizedDefault(hub string, on bool) error
	// Interfaces lists the interfaces of every device on bus.
	Interfaces(bus int) ([]string, error)
	Authorized(iface string) (bool, error)
	Authorize(iface string) error
	// Probe asks the kernel to bind a driver to an unbound interface.
	Probe(iface string) error
	// Driver is the bound driver's name, "" for none.
	Driver(iface string) (string, error)
	// Device is the identity of an interface's device now.
	Device(iface string) (Held, error)
}

// sysfs is the kernel through /sys (root: the sysfs mount point).
type sysfs struct{ root string }

var _ kernel = sysfs{}

func (s sysfs) devices() string { return filepath.Join(s.root, "bus", "usb", "devices") }

func (s sysfs) attr(name, attr string) string { return filepath.Join(s.devices(), name, attr) }

func (s sysfs) read(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// write writes one value to an existing attribute (never creates a file).
func (s sysfs) write(path, v string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s sysfs) names(keep func(string) bool) ([]string, error) {
	ents, err := os.ReadDir(s.devices())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if keep(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func (s sysfs) RootHubs() ([]string, error) {
	return s.names(func(n string) bool { _, ok := rootHubBus(n); return ok })
}

func (s sysfs) AuthorizedDefault(hub string) (bool, error) {
	return s.boolAttr(s.attr(hub, "interface_authorized_default"))
}

func (s sysfs) SetAuthorizedDefault(hub string, on bool) error {
	return s.write(s.attr(hub, "interface_authorized_default"), map[bool]string{true: "1", false: "0"}[on])
}

func (s sysfs) Interfaces(bus int) ([]string, error) {
	return s.names(func(n string) bool { b, _, ok := interfaceBus(n); return ok && b == bus })
}

func (s sysfs) boolAttr(path string) (bool, error) {
	v, err := s.read(path)
	if err != nil {
		return false, err
	}
	switch v {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%s: %q is not 0 or 1", path, v)
}

func (s sysfs) Authorized(iface string) (bool, error) { return s.boolAttr(s.attr(iface, "authorized")) }

func (s sysfs) Authorize(iface string) error { return s.write(s.attr(iface, "authorized"), "1") }

func (s sysfs) Probe(iface string) error {
	return s.write(filepath.Join(s.root, "bus", "usb", "drivers_probe"), iface)
}

func (s sysfs) Driver(iface string) (string, error) {
	l, err := os.Readlink(s.attr(iface, "driver"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(s.devices(), iface)); serr != nil {
			return "", serr // the interface itself is gone
		}
		return "", nil
	case err != nil:
		return "", err
	}
	return filepath.Base(l), nil
}

func (s sysfs) Device(iface string) (Held, error) {
	_, dev, ok := interfaceBus(iface)
	if !ok {
		return Held{}, fmt.Errorf("%q is not an interface name", iface)
	}
	h := Held{Interface: iface}
	for _, f := range []struct {
		attr string
		base int
		bits int
		set  func(uint64)
	}{
		{"busnum", 10, 16, func(v uint64) { h.Bus = int(v) }},
		{"devnum", 10, 16, func(v uint64) { h.Address = int(v) }},
		{"idVendor", 16, 16, func(v uint64) { h.Vendor = uint16(v) }},
		{"idProduct", 16, 16, func(v uint64) { h.Product = uint16(v) }},
	} {
		v, err := s.read(s.attr(dev, f.attr))
		if err != nil {
			return Held{}, err
		}
		n, err := strconv.ParseUint(v, f.base, f.bits)
		if err != nil {
			return Held{}, fmt.Errorf("%s/%s: %w", dev, f.attr, err)
		}
		f.set(n)
	}
	return h, nil
}

package hotplug

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// USBDevice is the view of a SUBSYSTEM=usb DEVTYPE=usb_device event.
type USBDevice struct {
	Port      string // sysfs name: "2-1", "1-1.4", "usb2" for a root hub
	BusNum    int
	DevNum    int
	Vendor    uint16 // idVendor
	Product   uint16 // idProduct
	BcdDevice uint16
	Class     uint8 // bDeviceClass
	SubClass  uint8
	Protocol  uint8
	DevName   string // relative to /dev, e.g. bus/usb/002/003

	// From sysfs (ReadAttrs); empty when the device has no such string
	// descriptor or the attributes were not read.
	Manufacturer string
	ProductName  string
	Serial       string
	Speed        string // Mbit/s: "1.5", "12", "480", "5000", …
}

// USBInterface is the view of a SUBSYSTEM=usb DEVTYPE=usb_interface event.
type USBInterface struct {
	Name          string // sysfs name, e.g. "2-1:1.0"
	DevicePath    string // DEVPATH of the USB device it belongs to
	Configuration int    // bConfigurationValue, from the name
	Number        int    // bInterfaceNumber, from the name
	Class         uint8
	SubClass      uint8
	Protocol      uint8
	Vendor        uint16 // of the device
	Product       uint16
}

// HCTL is a SCSI address: host, channel, target, LUN.
type HCTL struct {
	Host, Channel, Target int
	LUN                   uint64
}

func (h HCTL) String() string {
	return strconv.Itoa(h.Host) + ":" + strconv.Itoa(h.Channel) + ":" + strconv.Itoa(h.Target) + ":" + strconv.FormatUint(h.LUN, 10)
}

// ParseHCTL parses "H:C:T:L".
func ParseHCTL(s string) (HCTL, error) {
	var h HCTL
	parts := strings.Split(s, ":")
	if len(parts) != 4 {
		return h, &ParseError{Offset: -1, Field: "HCTL", Reason: strconv.Quote(truncate(s)) + " is not H:C:T:L"}
	}
	var n [3]int
	for i := range 3 {
		v, err := strconv.ParseUint(parts[i], 10, 31)
		if err != nil {
			return h, &ParseError{Offset: -1, Field: "HCTL", Reason: strconv.Quote(truncate(s)) + " is not H:C:T:L"}
		}
		n[i] = int(v)
	}
	l, err := strconv.ParseUint(parts[3], 10, 64)
	if err != nil {
		return h, &ParseError{Offset: -1, Field: "HCTL", Reason: strconv.Quote(truncate(s)) + " is not H:C:T:L"}
	}
	return HCTL{n[0], n[1], n[2], l}, nil
}

// SCSIDevice is the view of a SUBSYSTEM=scsi DEVTYPE=scsi_device event.
type SCSIDevice struct {
	HCTL HCTL
	Type int // peripheral device type (0 disk, 5 CD-ROM, ...), -1 if unknown

	// From sysfs (ReadAttrs), trimmed of the INQUIRY padding.
	Vendor   string
	Model    string
	Revision string
}

// SCSIGeneric is the view of a SUBSYSTEM=scsi_generic event (an sg node).
type SCSIGeneric struct {
	Name         string // "sg1"
	DevNode      string // "/dev/sg1"
	Major, Minor int
	DevicePath   string // DEVPATH of the SCSI device it belongs to
	HCTL         HCTL
}

// Block is the view of a SUBSYSTEM=block event.
type Block struct {
	Name         string // "sdb", "loop42"
	DevNode      string // "/dev/sdb"
	DevType      string // "disk" or "partition"
	Major, Minor int
	DiskSeq      uint64
}

func viewErr(field, value, want string) error {
	return &ParseError{Offset: -1, Field: field, Reason: strconv.Quote(truncate(value)) + " is not " + want}
}

// splitSlash3 splits "a/b/c".
func splitSlash3(s string) (a, b, c string, ok bool) {
	a, rest, ok1 := strings.Cut(s, "/")
	b, c, ok2 := strings.Cut(rest, "/")
	return a, b, c, ok1 && ok2 && !strings.Contains(c, "/")
}

// parseTriple parses "x/y/z" with each number in base.
func parseTriple(field, s string, base, bits int) (x, y, z uint64, err error) {
	a, b, c, ok := splitSlash3(s)
	if !ok {
		return 0, 0, 0, viewErr(field, s, "x/y/z")
	}
	if x, err = strconv.ParseUint(a, base, bits); err == nil {
		if y, err = strconv.ParseUint(b, base, bits); err == nil {
			z, err = strconv.ParseUint(c, base, bits)
		}
	}
	if err != nil {
		return 0, 0, 0, viewErr(field, s, "three numbers x/y/z")
	}
	return x, y, z, nil
}

func (e *Event) isUSB(devtype string) bool { return e.Subsystem == "usb" && e.DevType == devtype }

// USBDevice decodes a USB device event. The strings come from sysfs: call
// ReadAttrs on the result.
func (e *Event) USBDevice() (USBDevice, error) {
	var d USBDevice
	if !e.isUSB("usb_device") {
		return d, ErrNotApplicable
	}
	d.Port = e.Name()
	v, p, bcd, err := parseTriple("PRODUCT", e.Get("PRODUCT"), 16, 16)
	if err != nil {
		return d, err
	}
	d.Vendor, d.Product, d.BcdDevice = uint16(v), uint16(p), uint16(bcd)
	c, s, pr, err := parseTriple("TYPE", e.Get("TYPE"), 10, 8)
	if err != nil {
		return d, err
	}
	d.Class, d.SubClass, d.Protocol = uint8(c), uint8(s), uint8(pr)
	if d.BusNum, err = atoiField(e, "BUSNUM"); err != nil {
		return d, err
	}
	if d.DevNum, err = atoiField(e, "DEVNUM"); err != nil {
		return d, err
	}
	d.DevName = e.Get("DEVNAME")
	return d, nil
}

func atoiField(e *Event, key string) (int, error) {
	s := e.Get(key)
	n, err := strconv.ParseUint(s, 10, 31)
	if err != nil {
		return 0, viewErr(key, s, "a decimal number")
	}
	return int(n), nil
}

// USBInterface decodes a USB interface event.
func (e *Event) USBInterface() (USBInterface, error) {
	var in USBInterface
	if !e.isUSB("usb_interface") {
		return in, ErrNotApplicable
	}
	in.Name = e.Name()
	in.DevicePath = e.DevPath[:max(0, len(e.DevPath)-len(in.Name)-1)]
	// "2-1:1.0" is port:configuration.interface.
	_, ci, ok := strings.Cut(in.Name, ":")
	cs, is, ok2 := strings.Cut(ci, ".")
	cfg, err1 := strconv.ParseUint(cs, 10, 8)
	num, err2 := strconv.ParseUint(is, 10, 8)
	if !ok || !ok2 || err1 != nil || err2 != nil {
		return in, viewErr("DEVPATH", in.Name, "PORT:CONFIG.INTERFACE")
	}
	in.Configuration, in.Number = int(cfg), int(num)
	c, s, p, err := parseTriple("INTERFACE", e.Get("INTERFACE"), 10, 8)
	if err != nil {
		return in, err
	}
	in.Class, in.SubClass, in.Protocol = uint8(c), uint8(s), uint8(p)
	if prod, ok := e.Lookup("PRODUCT"); ok {
		v, pid, _, err := parseTriple("PRODUCT", prod, 16, 16)
		if err != nil {
			return in, err
		}
		in.Vendor, in.Product = uint16(v), uint16(pid)
	}
	return in, nil
}

// SCSIDevice decodes a SCSI device (LUN) event. Vendor, model and revision
// come from sysfs: call ReadAttrs on the result.
func (e *Event) SCSIDevice() (SCSIDevice, error) {
	d := SCSIDevice{Type: -1}
	if e.Subsystem != "scsi" || e.DevType != "scsi_device" {
		return d, ErrNotApplicable
	}
	h, err := ParseHCTL(e.Name())
	if err != nil {
		return d, err
	}
	d.HCTL = h
	// MODALIAS=scsi:t-0x00 (absent from unbind events).
	if m, ok := e.Lookup("MODALIAS"); ok {
		t, ok := strings.CutPrefix(m, "scsi:t-0x")
		n, err := strconv.ParseUint(t, 16, 8)
		if !ok || err != nil {
			return d, viewErr("MODALIAS", m, "scsi:t-0xNN")
		}
		d.Type = int(n)
	}
	return d, nil
}

// SCSIGeneric decodes an sg node event.
func (e *Event) SCSIGeneric() (SCSIGeneric, error) {
	var g SCSIGeneric
	if e.Subsystem != "scsi_generic" {
		return g, ErrNotApplicable
	}
	g.Name = e.Name()
	dev, ok := strings.CutSuffix(e.DevPath, "/scsi_generic/"+g.Name)
	if !ok {
		return g, viewErr("DEVPATH", e.DevPath, ".../H:C:T:L/scsi_generic/sgN")
	}
	g.DevicePath = dev
	h, err := ParseHCTL(dev[strings.LastIndexByte(dev, '/')+1:])
	if err != nil {
		return g, err
	}
	g.HCTL = h
	if g.Major, g.Minor, err = majorMinor(e); err != nil {
		return g, err
	}
	g.DevNode = devNode(e)
	return g, nil
}

// Block decodes a block device event.
func (e *Event) Block() (Block, error) {
	var b Block
	if e.Subsystem != "block" {
		return b, ErrNotApplicable
	}
	b.Name, b.DevType = e.Name(), e.DevType
	var err error
	if b.Major, b.Minor, err = majorMinor(e); err != nil {
		return b, err
	}
	if s, ok := e.Lookup("DISKSEQ"); ok {
		if b.DiskSeq, err = strconv.ParseUint(s, 10, 64); err != nil {
			return b, viewErr("DISKSEQ", s, "a decimal number")
		}
	}
	b.DevNode = devNode(e)
	return b, nil
}

func majorMinor(e *Event) (int, int, error) {
	ma, err := atoiField(e, "MAJOR")
	if err != nil {
		return 0, 0, err
	}
	mi, err := atoiField(e, "MINOR")
	return ma, mi, err
}

func devNode(e *Event) string {
	if n := e.Get("DEVNAME"); n != "" {
		return "/dev/" + n
	}
	return ""
}

// ReadAttrs fills the string descriptors from sysfs under root ("/sys" on a
// real system). A missing attribute (a device without a serial string) is
// not an error; an unreadable device directory is.
func (d *USBDevice) ReadAttrs(root, devpath string) error {
	dir := filepath.Join(root, devpath)
	if _, err := os.Stat(dir); err != nil {
		return &OpError{Op: "read attributes", Path: dir, Err: err}
	}
	d.Manufacturer = readAttr(dir, "manufacturer")
	d.ProductName = readAttr(dir, "product")
	d.Serial = readAttr(dir, "serial")
	d.Speed = readAttr(dir, "speed")
	return nil
}

// ReadAttrs fills vendor, model and revision from sysfs under root.
func (d *SCSIDevice) ReadAttrs(root, devpath string) error {
	dir := filepath.Join(root, devpath)
	if _, err := os.Stat(dir); err != nil {
		return &OpError{Op: "read attributes", Path: dir, Err: err}
	}
	d.Vendor = readAttr(dir, "vendor")
	d.Model = readAttr(dir, "model")
	d.Revision = readAttr(dir, "rev")
	if t := readAttr(dir, "type"); t != "" && d.Type < 0 {
		if n, err := strconv.Atoi(t); err == nil {
			d.Type = n
		}
	}
	return nil
}

// readAttr returns a sysfs attribute without its newline and padding.
func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

package hid

import (
	"errors"
	"fmt"
)

// MaxDescriptorSize is the kernel's HID_MAX_DESCRIPTOR_SIZE.
const MaxDescriptorSize = 4096

// ErrBadDescriptor is matched by every error of ParseReportDescriptor.
var ErrBadDescriptor = errors.New("malformed report descriptor")

// ReportKind is the main item a report is made of.
type ReportKind uint8

// Report kinds.
const (
	Input ReportKind = iota + 1
	Output
	Feature
)

func (k ReportKind) String() string {
	switch k {
	case Input:
		return "input"
	case Output:
		return "output"
	case Feature:
		return "feature"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Report is the layout of one report of a device.
type Report struct {
	Kind ReportKind
	ID   uint8 // 0 when the device does not number its reports
	Bits int   // the fields' total size, without the ID byte
}

// ReportDescriptor is what drvkit reads from a report descriptor: enough to
// match a device by what it is (its first top-level collection's usage, as
// keyboard is page 0x01 usage 0x06) and to size its reports.
type ReportDescriptor struct {
	UsagePage   uint16 // of the first top-level collection
	Usage       uint16
	Collections int  // top-level (application) collections
	Numbered    bool // reports carry a report ID first
	Reports     []Report
}

// Size returns the length in bytes of a report as read or written through
// hidraw (with the ID byte when the device numbers its reports), or 0 if
// the device has no such report.
func (d *ReportDescriptor) Size(kind ReportKind, id uint8) int {
	for _, r := range d.Reports {
		if r.Kind == kind && r.ID == id {
			n := (r.Bits + 7) / 8
			if d.Numbered {
				n++
			}
			return n
		}
	}
	return 0
}

// MaxSize returns the length of the longest report of a kind.
func (d *ReportDescriptor) MaxSize(kind ReportKind) int {
	m := 0
	for _, r := range d.Reports {
		if r.Kind == kind {
			m = max(m, d.Size(kind, r.ID))
		}
	}
	return m
}

// DescriptorError says where a descriptor is malformed.
type DescriptorError struct {
	Offset int
	Reason string
}

func (e *DescriptorError) Error() string {
	return fmt.Sprintf("malformed report descriptor at byte %d: %s", e.Offset, e.Reason)
}

// Is makes errors.Is(err, ErrBadDescriptor) true.
func (e *DescriptorError) Is(target error) bool { return target == ErrBadDescriptor }

type globals struct {
	usagePage uint32
	size      uint32
	count     uint32
	id        uint8
}

// ParseReportDescriptor decodes the items of a report descriptor (HID 1.11
// section 6.2.2): short and long items, Push and Pop, collections, and
// the Report Size, Report Count and Report ID globals that lay out the
// Input, Output and Feature reports. It never panics; a descriptor a device
// could not use (truncated item, unbalanced collections or Push/Pop, a
// report larger than MaxReportSize) is a *DescriptorError.
func ParseReportDescriptor(b []byte) (*ReportDescriptor, error) {
	if len(b) == 0 || len(b) > MaxDescriptorSize {
		return nil, &DescriptorError{Offset: 0, Reason: fmt.Sprintf("size %d not in 1..%d", len(b), MaxDescriptorSize)}
	}
	d := &ReportDescriptor{}
	var g globals
	var stack []globals
	var usages []uint32 // local Usage items since the last main item
	depth := 0
	bits := map[[2]uint8]int{} // (kind, id) → bits
	var order [][2]uint8
	for off := 0; off < len(b); {
		prefix := b[off]
		if prefix == 0xfe { // long item: size, tag, data; none is defined
			if off+3 > len(b) || off+3+int(b[off+1]) > len(b) {
				return nil, &DescriptorError{Offset: off, Reason: "truncated long item"}
			}
			off += 3 + int(b[off+1])
			continue
		}
		size := int(prefix & 3)
		if size == 3 {
			size = 4
		}
		if off+1+size > len(b) {
			return nil, &DescriptorError{Offset: off, Reason: "truncated item"}
		}
		var v uint32
		for i := range size {
			v |= uint32(b[off+1+i]) << (8 * i)
		}
		typ, tag := (prefix>>2)&3, prefix>>4
		switch typ {
		case 0: // main
			switch tag {
			case 0x8, 0x9, 0xb: // Input, Output, Feature
				kind := map[uint8]ReportKind{0x8: Input, 0x9: Output, 0xb: Feature}[tag]
				key := [2]uint8{uint8(kind), g.id}
				if _, ok := bits[key]; !ok {
					order = append(order, key)
				}
				bits[key] += int(g.size) * int(g.count)
				if bits[key] > MaxReportSize*8 {
					return nil, &DescriptorError{Offset: off, Reason: fmt.Sprintf("%s report %d longer than %d bytes", kind, g.id, MaxReportSize)}
				}
			case 0xa: // Collection
				if depth == 0 {
					if d.Collections == 0 && len(usages) > 0 {
						u := usages[0]
						d.UsagePage, d.Usage = uint16(u>>16), uint16(u)
					}
					d.Collections++
				}
				depth++
				if depth > 32 {
					return nil, &DescriptorError{Offset: off, Reason: "collections nested more than 32 deep"}
				}
			case 0xc: // End Collection
				if depth == 0 {
					return nil, &DescriptorError{Offset: off, Reason: "End Collection without Collection"}
				}
				depth--
			default:
				return nil, &DescriptorError{Offset: off, Reason: fmt.Sprintf("unknown main item tag %#x", tag)}
			}
			usages = usages[:0]
		case 1: // global
			switch tag {
			case 0x0:
				g.usagePage = v
			case 0x7:
				if v > 256 { // the kernel's limit for one field
					return nil, &DescriptorError{Offset: off, Reason: fmt.Sprintf("Report Size %d larger than 256", v)}
				}
				g.size = v
			case 0x8:
				if v == 0 || v > 255 {
					return nil, &DescriptorError{Offset: off, Reason: fmt.Sprintf("Report ID %d not in 1..255", v)}
				}
				g.id = uint8(v)
				d.Numbered = true
			case 0x9:
				if v > MaxReportSize*8 {
					return nil, &DescriptorError{Offset: off, Reason: fmt.Sprintf("Report Count %d too large", v)}
				}
				g.count = v
			case 0xa: // Push
				if len(stack) >= 16 {
					return nil, &DescriptorError{Offset: off, Reason: "Push nested more than 16 deep"}
				}
				stack = append(stack, g)
			case 0xb: // Pop
				if len(stack) == 0 {
					return nil, &DescriptorError{Offset: off, Reason: "Pop without Push"}
				}
				g, stack = stack[len(stack)-1], stack[:len(stack)-1]
			}
		case 2: // local
			if tag == 0x0 { // Usage: a 4-byte one carries its own page
				u := g.usagePage<<16 | v&0xffff
				if size == 4 {
					u = v
				}
				if len(usages) < 64 {
					usages = append(usages, u)
				}
			}
		default:
			return nil, &DescriptorError{Offset: off, Reason: "reserved item type"}
		}
		off += 1 + size
	}
	if depth != 0 {
		return nil, &DescriptorError{Offset: len(b), Reason: fmt.Sprintf("%d collection(s) not ended", depth)}
	}
	for _, k := range order {
		d.Reports = append(d.Reports, Report{Kind: ReportKind(k[0]), ID: k[1], Bits: bits[k]})
	}
	return d, nil
}

// BootKeyboard is the report descriptor of a boot-protocol keyboard (HID
// 1.11 appendix B.1): 8-byte input reports (modifiers, reserved, six key
// codes) and a 1-byte LED output report. QEMU's usb-kbd sends this one.
var BootKeyboard = []byte{
	0x05, 0x01, 0x09, 0x06, 0xa1, 0x01, 0x05, 0x07, 0x19, 0xe0, 0x29, 0xe7, 0x15, 0x00, 0x25, 0x01,
	0x75, 0x01, 0x95, 0x08, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01, 0x95, 0x05, 0x75, 0x01,
	0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02, 0x95, 0x01, 0x75, 0x03, 0x91, 0x01, 0x95, 0x06,
	0x75, 0x08, 0x15, 0x00, 0x25, 0xff, 0x05, 0x07, 0x19, 0x00, 0x29, 0xff, 0x81, 0x00, 0xc0,
}

// BootMouse is the report descriptor of a boot-protocol mouse (HID 1.11
// appendix B.2): 3-byte input reports (buttons, X, Y).
var BootMouse = []byte{
	0x05, 0x01, 0x09, 0x02, 0xa1, 0x01, 0x09, 0x01, 0xa1, 0x00, 0x05, 0x09, 0x19, 0x01, 0x29, 0x03,
	0x15, 0x00, 0x25, 0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02, 0x95, 0x01, 0x75, 0x05, 0x81, 0x01,
	0x05, 0x01, 0x09, 0x30, 0x09, 0x31, 0x15, 0x81, 0x25, 0x7f, 0x75, 0x08, 0x95, 0x02, 0x81, 0x06,
	0xc0, 0xc0,
}

// Usage pages and usages of the top-level collections of common devices.
const (
	UsagePageGenericDesktop = 0x01
	UsageMouse              = 0x02
	UsageKeyboard           = 0x06
)

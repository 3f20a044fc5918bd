package sim

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/driver/hid"
	"github.com/drvkit/drvkit/hotplug"
)

// The simulated usbhid: an interface plugged with a report descriptor
// (plug … hid=keyboard) binds to usbhid, which creates a device on the hid
// bus with hid-generic bound, its input device and event node, and a
// hidraw node, in the order of hid_add_device and hid_connect; unplug
// tears them down in the order of hid_disconnect. Environments follow
// hid_uevent (HID_ID, HID_NAME, HID_PHYS, HID_UNIQ, MODALIAS) and hidraw's
// (MAJOR, MINOR, DEVNAME). The input device's environment is reduced to
// its identity (PRODUCT, NAME, PHYS, UNIQ): no capability bitmaps, and no
// LED class devices.
const (
	hidrawMajor = 246 // dynamic on a real kernel; 246 on the e2e guest (hotplug/hidbus/testdata/qemu-usb-kbd.txt)
	inputMajor  = 13
	maxHIDDevs  = 1 << 16
)

// hidDev is a HID device usbhid created for an interface.
type hidDev struct {
	seq        int // the kernel's hid device counter, never reused
	path       string
	raw, input int // hidraw minor, input device number (eventN too)
	desc       []byte
}

// parseHIDDescs parses hid=: a comma-separated list, one per HID
// (class 03) interface in order: keyboard, mouse, or hex:BYTES.
func parseHIDDescs(s string) ([][]byte, error) {
	var out [][]byte
	for _, f := range strings.Split(s, ",") {
		switch {
		case f == "keyboard":
			out = append(out, hid.BootKeyboard)
		case f == "mouse":
			out = append(out, hid.BootMouse)
		case strings.HasPrefix(f, "hex:"):
			b, err := hex.DecodeString(f[4:])
			if err != nil {
				return nil, fmt.Errorf("hid=%q: %q is not hex", s, f[4:])
			}
			if _, err := hid.ParseReportDescriptor(b); err != nil {
				return nil, fmt.Errorf("hid=%q: %v", s, err)
			}
			out = append(out, b)
		default:
			return nil, fmt.Errorf("hid=%q: want keyboard, mouse or hex:DESCRIPTOR per HID interface", s)
		}
	}
	return out, nil
}

func (d *usbDev) hidName() string {
	// usbhid_probe: manufacturer, then product, else "HID vvvv:pppp".
	name := strings.TrimSpace(strings.TrimSpace(d.manufacturer) + " " + strings.TrimSpace(d.product))
	if name == "" {
		name = fmt.Sprintf("HID %04x:%04x", d.vid, d.pid)
	}
	return name
}

// hidPhys is usb_make_path's "usb-CONTROLLER-DEVPATH" plus "/inputN".
func (d *usbDev) hidPhys(i int) string {
	_, ports, _ := strings.Cut(d.port, "-")
	return fmt.Sprintf("usb-%s-%s/input%d", simXHCI[strings.LastIndexByte(simXHCI, '/')+1:], ports, i)
}

// hidEnv is hid_uevent's environment, with the driver when bound; an
// unbind event has no MODALIAS (kobject_uevent_env drops it for unbind).
func (d *usbDev) hidEnv(h *hidDev, i int, driver, modalias bool) []string {
	var env []string
	if driver {
		env = append(env, "DRIVER=hid-generic")
	}
	env = append(env,
		fmt.Sprintf("HID_ID=%04X:%08X:%08X", hid.BusUSB, d.vid, d.pid),
		"HID_NAME="+d.hidName(),
		"HID_PHYS="+d.hidPhys(i),
		"HID_UNIQ="+d.serial)
	if modalias {
		env = append(env, fmt.Sprintf("MODALIAS=hid:b%04Xg%04Xv%08Xp%08X", hid.BusUSB, 1, d.vid, d.pid))
	}
	return env
}

// remoteWakeup: the device's configuration declares remote wakeup. The
// simulated ones that do are those with a HID interface usbhid drives
// (hid=), as QEMU's usb-kbd, usb-mouse and usb-tablet, and most real
// keyboards and mice.
func (d *usbDev) remoteWakeup() bool {
	for _, in := range d.ifaces {
		if in.hidDesc != nil {
			return true
		}
	}
	return false
}

func (d *usbDev) inputEnv(i int) []string {
	return []string{
		fmt.Sprintf("PRODUCT=%x/%x/%x/%x", hid.BusUSB, d.vid, d.pid, 0x110),
		`NAME="` + d.hidName() + `"`, // quoted by the kernel, not escaped
		`PHYS="` + d.hidPhys(i) + `"`,
		`UNIQ="` + d.serial + `"`,
	}
}

func (h *hidDev) rawPath() string   { return fmt.Sprintf("%s/hidraw/hidraw%d", h.path, h.raw) }
func (h *hidDev) inputPath() string { return fmt.Sprintf("%s/input/input%d", h.path, h.input) }
func (h *hidDev) eventPath() string { return fmt.Sprintf("%s/event%d", h.inputPath(), h.input) }

func (h *hidDev) rawEnv() []string {
	return []string{"MAJOR=" + strconv.Itoa(hidrawMajor), "MINOR=" + strconv.Itoa(h.raw), fmt.Sprintf("DEVNAME=hidraw%d", h.raw)}
}

func (h *hidDev) eventEnv() []string {
	return []string{"MAJOR=" + strconv.Itoa(inputMajor), "MINOR=" + strconv.Itoa(64+h.input), fmt.Sprintf("DEVNAME=input/event%d", h.input)}
}

// hidConnect: usbhid_probe → hid_add_device (the device, unbound), then
// hid-generic's probe (hid_connect: input device and its event node, then
// hidraw), then the device's bind.
func (m *machine) hidConnect(d *usbDev, i int) {
	in := &d.ifaces[i]
	m.hidSeq++
	h := &hidDev{seq: m.hidSeq, raw: m.hidrawUsed.get(), input: m.inputUsed.get(), desc: in.hidDesc}
	h.path = fmt.Sprintf("%s/%04X:%04X:%04X.%04X", d.ifacePath(i), hid.BusUSB, d.vid, d.pid, h.seq)
	in.hid = h
	m.emitRaw(hotplug.ActionAdd, h.path, "hid", nil, map[string][]byte{"report_descriptor": h.desc}, d.hidEnv(h, i, false, true)...)
	m.emit(hotplug.ActionAdd, h.inputPath(), "input", nil, d.inputEnv(i)...)
	m.emit(hotplug.ActionAdd, h.eventPath(), "input", nil, h.eventEnv()...)
	m.emit(hotplug.ActionAdd, h.rawPath(), "hidraw", nil, h.rawEnv()...)
	m.emit(hotplug.ActionBind, h.path, "hid", nil, d.hidEnv(h, i, true, true)...)
}

// hidDisconnect: hid_destroy_device → hid-generic's remove (hid_disconnect:
// input first, then hidraw), the unbind, the device.
func (m *machine) hidDisconnect(d *usbDev, i int) {
	h := d.ifaces[i].hid
	if h == nil {
		return
	}
	m.emit(hotplug.ActionRemove, h.eventPath(), "input", nil, h.eventEnv()...)
	m.emit(hotplug.ActionRemove, h.inputPath(), "input", nil, d.inputEnv(i)...)
	m.emit(hotplug.ActionRemove, h.rawPath(), "hidraw", nil, h.rawEnv()...)
	m.emit(hotplug.ActionUnbind, h.path, "hid", nil, d.hidEnv(h, i, false, false)...)
	m.emit(hotplug.ActionRemove, h.path, "hid", nil, d.hidEnv(h, i, false, true)...)
	m.hidrawUsed.put(h.raw)
	m.inputUsed.put(h.input)
	d.ifaces[i].hid = nil
}

// hidDup re-sends the adds of a HID device and its hidraw node as sysfs
// holds them now.
func (m *machine) hidDup(d *usbDev, i int) {
	if h := d.ifaces[i].hid; h != nil {
		m.emitRaw(hotplug.ActionAdd, h.path, "hid", nil, map[string][]byte{"report_descriptor": h.desc}, d.hidEnv(h, i, true, true)...)
		m.emit(hotplug.ActionAdd, h.rawPath(), "hidraw", nil, h.rawEnv()...)
	}
}

// hidIface finds the HID interface of the device at port (iface=N, or
// the first one).
func (m *machine) hidIface(cmd, port string, o map[string]string) (*usbDev, int, error) {
	d, ok := m.usb[port]
	if !ok {
		return nil, 0, fmt.Errorf("%s: no device at port %s", cmd, port)
	}
	if _, ok := o["iface"]; ok {
		d, i, err := m.iface(cmd, port, o)
		if err != nil {
			return nil, 0, err
		}
		if d.ifaces[i].hid == nil {
			return nil, 0, fmt.Errorf("%s: interface %d of %s is not a bound HID interface", cmd, i, port)
		}
		return d, i, nil
	}
	for i := range d.ifaces {
		if d.ifaces[i].hid != nil {
			return d, i, nil
		}
	}
	return nil, 0, fmt.Errorf("%s: device at port %s has no bound HID interface (plug it with hid=keyboard)", cmd, port)
}

// hidInput sends one input report (hid input PORT report=HEX).
func (m *machine) hidInput(port string, o map[string]string) error {
	d, i, err := m.hidIface("hid input", port, o)
	if err != nil {
		return err
	}
	r, err := hex.DecodeString(o["report"])
	if err != nil || len(r) == 0 || len(r) > hid.MaxReportSize {
		return fmt.Errorf("hid input: report=%q is not 1 to %d bytes in hex", short(o["report"]), hid.MaxReportSize)
	}
	m.sendReport(d.ifaces[i].hid, r)
	return nil
}

func (m *machine) sendReport(h *hidDev, r []byte) {
	m.out = append(m.out, simEvent{report: &Report{DevPath: h.path, Node: fmt.Sprintf("/dev/hidraw%d", h.raw), Data: r}})
}

// hidType types text on a boot keyboard (hid type PORT text=S): a press
// and a release report per character.
func (m *machine) hidType(port string, o map[string]string) error {
	d, i, err := m.hidIface("hid type", port, o)
	if err != nil {
		return err
	}
	text := o["text"]
	if text == "" || len(text) > 4096 {
		return errors.New("hid type: want text= of 1 to 4096 characters")
	}
	h := d.ifaces[i].hid
	for _, c := range text {
		code, shift, ok := KeyCode(c)
		if !ok {
			return fmt.Errorf("hid type: no key for %q (letters, digits, space, newline and -=[];',./ only)", c)
		}
		var mod byte
		if shift {
			mod = 0x02 // left shift
		}
		m.sendReport(h, []byte{mod, 0, code, 0, 0, 0, 0, 0})
		m.sendReport(h, make([]byte, 8))
	}
	return nil
}

// KeyCode returns the boot keyboard usage (HID usage table 0x07) of a
// character, and whether it needs shift.
func KeyCode(c rune) (code byte, shift bool, ok bool) {
	switch {
	case c >= 'a' && c <= 'z':
		return byte(0x04 + c - 'a'), false, true
	case c >= 'A' && c <= 'Z':
		return byte(0x04 + c - 'A'), true, true
	case c >= '1' && c <= '9':
		return byte(0x1e + c - '1'), false, true
	case c == '0':
		return 0x27, false, true
	}
	if i := strings.IndexRune("\n\x1b\b\t -=[]\\", c); i >= 0 {
		return byte(0x28 + i), false, true
	}
	if i := strings.IndexRune(";'`,./", c); i >= 0 {
		return byte(0x33 + i), false, true
	}
	return 0, false, false
}

func short(s string) string { return truncate(s, 32) }

package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/hotplug"
)

// The simulated machine is modelled on the QEMU guest of the captures: an
// xHCI controller with a USB 2 root hub (bus 1) and a USB 3 root hub
// (bus 2), and a virtio-scsi host (host0). Event sequences, numbering
// (devnum, host, sg, sd, bsg, DISKSEQ) and environments follow what that
// kernel sent, so a scenario replays byte-identical datagrams.
const (
	simXHCI      = "/devices/pci0000:00/0000:00:02.0"
	simVirtio    = "/devices/pci0000:00/0000:00:03.0/virtio0"
	usbMajor     = 189
	sgMajor      = 21
	bsgMajor     = 248
	maxSimDisks  = maxSimNumber // sda..sdzz, sdaaa..: the names go on (sd_format_disk_name)
	maxSimNumber = 1 << 20
)

// simEvent is a generated event and the sysfs attributes its device has
// (text attributes get a newline, raw ones are written as they are), or an
// input report a device sends.
type simEvent struct {
	ev     hotplug.Event
	attrs  map[string]string
	raw    map[string][]byte
	report *Report
}

type usbIface struct {
	class, sub, proto uint8
	driver            string
	host              int     // SCSI host number for usb-storage, else -1
	hidDesc           []byte  // report descriptor of a HID interface (hid=), else nil
	hid               *hidDev // its HID device while usbhid is bound
}

type usbDev struct {
	port                  string
	path                  string
	bus, devnum           int
	vid, pid, bcd         uint16
	class, sub, proto     uint8
	manufacturer, product string
	serial                string
	ifaces                []usbIface
	lunType               int
	lunVendor, lunModel   string
	lunRev                string
	children              []string // ports of devices behind this hub, in plug order
}

type scsiLUN struct {
	hctl               hotplug.HCTL
	path               string // the scsi_device's DEVPATH
	typ                int
	vendor, model, rev string
	sg, bsg, disk      int // disk -1 when not a disk
	diskseq            uint64
}

type scsiHost struct {
	n    int
	path string // DEVPATH of hostN
	usb  bool   // usb-storage host (removed with its interface)
	luns map[hotplug.HCTL]*scsiLUN
}

type machine struct {
	sysfs                     *mirror // nil: no mirror
	seqnum                    uint64
	usb                       map[string]*usbDev
	rootHub                   map[int][]string // bus -> ports plugged on its root hub
	lastDev                   map[int]int      // bus -> last devnum given
	hosts                     map[int]*scsiHost
	luns                      map[hotplug.HCTL]*scsiLUN
	sgUsed, bsgUsed, diskUsed numbers
	targetLUNs                map[hotplug.HCTL]int // LUNs per target (LUN field zero)
	diskseq                   uint64
	hidSeq                    int
	hidrawUsed, inputUsed     numbers
	out                       []simEvent
}

func newMachine(seqnum uint64) *machine {
	m := &machine{
		seqnum: seqnum, usb: map[string]*usbDev{}, rootHub: map[int][]string{},
		lastDev: map[int]int{1: 1, 2: 1}, hosts: map[int]*scsiHost{0: {n: 0, path: simVirtio + "/host0", luns: map[hotplug.HCTL]*scsiLUN{}}},
		luns: map[hotplug.HCTL]*scsiLUN{}, targetLUNs: map[hotplug.HCTL]int{},
	}
	return m
}

// exec runs one step and returns the events it produced.
func (m *machine) exec(st Step) ([]simEvent, error) {
	m.out = nil
	var err error
	switch st.Cmd {
	case "seqnum":
		m.seqnum = st.N
	case "wait":
	case "plug":
		err = m.plug(st.Arg, st.Opts)
	case "unplug":
		err = m.unplug(st.Arg)
	case "dup":
		err = m.dup(st.Arg)
	case "scsi-add":
		err = m.scsiAdd(st.Arg, st.Opts)
	case "scsi-remove":
		err = m.scsiRemove(st.Arg)
	case "bind":
		err = m.bind(st.Arg, st.Opts)
	case "unbind":
		err = m.unbind(st.Arg, st.Opts)
	case "hid-input":
		err = m.hidInput(st.Arg, st.Opts)
	case "hid-type":
		err = m.hidType(st.Arg, st.Opts)
	default:
		err = fmt.Errorf("unknown step %q", st.Cmd)
	}
	if err != nil {
		return nil, err
	}
	if m.sysfs != nil {
		for _, se := range m.out {
			if se.report != nil {
				continue
			}
			if err := m.sysfs.apply(se); err != nil {
				return nil, err
			}
		}
	}
	return m.out, nil
}

func (m *machine) emit(a hotplug.Action, devpath, subsystem string, attrs map[string]string, env ...string) {
	m.emitRaw(a, devpath, subsystem, attrs, nil, env...)
}

func (m *machine) emitRaw(a hotplug.Action, devpath, subsystem string, attrs map[string]string, raw map[string][]byte, env ...string) {
	ev, err := hotplug.NewEvent(a, devpath, subsystem, m.seqnum, env...)
	if err != nil {
		// Every path and value here was validated when the step was parsed.
		panic("sim: simulator built an invalid event: " + err.Error())
	}
	ev.Origin = hotplug.OriginSimulated
	m.seqnum++
	m.out = append(m.out, simEvent{ev: ev, attrs: attrs, raw: raw})
}

// numbers hands out the lowest free number, as the kernel's IDAs do for
// sg, bsg, sd and hidraw minors, in O(log n): the numbers below next that
// are free are kept in a min-heap.
type numbers struct {
	n    int // numbers in use
	next int // every number ≥ next is free
	free intHeap
}

func (u *numbers) len() int { return u.n }

func (u *numbers) get() int {
	u.n++
	if u.free.Len() > 0 {
		return heap.Pop(&u.free).(int)
	}
	u.next++
	return u.next - 1
}

func (u *numbers) put(v int) {
	u.n--
	heap.Push(&u.free, v)
}

type intHeap []int

func (h intHeap) Len() int           { return len(h) }
func (h intHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h intHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *intHeap) Push(x any)        { *h = append(*h, x.(int)) }
func (h *intHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

func lowestFree(used map[int]bool) int {
	for i := 0; ; i++ {
		if !used[i] {
			return i
		}
	}
}

// --- USB ---

func parseHex16(k, s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a 16-bit hex number", k, s)
	}
	return uint16(n), nil
}

// parseCSP parses a hex class/subclass/protocol triple "08/06/50".
func parseCSP(k, s string) (c, sc, p uint8, err error) {
	x, rest, ok1 := strings.Cut(s, "/")
	y, z, ok2 := strings.Cut(rest, "/")
	ok := ok1 && ok2 && !strings.Contains(z, "/")
	if ok {
		var n [3]uint64
		for i, f := range []string{x, y, z} {
			if n[i], err = strconv.ParseUint(f, 16, 8); err != nil {
				break
			}
		}
		if err == nil {
			return uint8(n[0]), uint8(n[1]), uint8(n[2]), nil
		}
	}
	return 0, 0, 0, fmt.Errorf("%s=%q is not CC/SS/PP in hex", k, s)
}

// parsePort checks "B-P[.P...]" and returns the bus and the parent port
// ("" for the root hub).
func parsePort(port string) (bus int, parent string, err error) {
	bad := fmt.Errorf("port %q is not BUS-PORT[.PORT...] (e.g. 2-1, 1-1.4)", port)
	b, rest, ok := strings.Cut(port, "-")
	if !ok {
		return 0, "", bad
	}
	n, err := strconv.Atoi(b)
	if err != nil {
		return 0, "", bad
	}
	parts := strings.Split(rest, ".")
	if len(parts) > 6 {
		return 0, "", fmt.Errorf("port %q: more than 6 tiers", port)
	}
	for _, p := range parts {
		if v, err := strconv.Atoi(p); err != nil || v < 1 || v > 31 || p != strconv.Itoa(v) {
			return 0, "", bad
		}
	}
	if n != 1 && n != 2 {
		return 0, "", fmt.Errorf("port %q: the simulated machine has buses 1 and 2", port)
	}
	if i := strings.LastIndexByte(port, '.'); i >= 0 {
		parent = port[:i]
	}
	return n, parent, nil
}

func (m *machine) plug(port string, o map[string]string) error {
	bus, parent, err := parsePort(port)
	if err != nil {
		return err
	}
	if _, ok := m.usb[port]; ok {
		return fmt.Errorf("plug: port %s is already in use (unplug it first)", port)
	}
	d := &usbDev{port: port, bus: bus, lunType: 0, lunVendor: "QEMU", lunModel: "QEMU HARDDISK", lunRev: "2.5+"}
	parentPath := fmt.Sprintf("%s/usb%d", simXHCI, bus)
	if parent != "" {
		p, ok := m.usb[parent]
		if !ok {
			return fmt.Errorf("plug: no hub at port %s", parent)
		}
		if p.class != 9 {
			return fmt.Errorf("plug: device at port %s is not a hub (class %02x)", parent, p.class)
		}
		parentPath = p.path
	}
	d.path = parentPath + "/" + port
	for _, k := range []string{"vid", "pid", "ifaces"} {
		if _, ok := o[k]; !ok {
			return fmt.Errorf("plug: %s= is required", k)
		}
	}
	if d.vid, err = parseHex16("vid", o["vid"]); err != nil {
		return err
	}
	if d.pid, err = parseHex16("pid", o["pid"]); err != nil {
		return err
	}
	if v, ok := o["bcd"]; ok {
		if d.bcd, err = parseHex16("bcd", v); err != nil {
			return err
		}
	}
	if v, ok := o["class"]; ok {
		if d.class, d.sub, d.proto, err = parseCSP("class", v); err != nil {
			return err
		}
	}
	d.manufacturer, d.product, d.serial = o["manufacturer"], o["product"], o["serial"]
	if v, ok := o["type"]; ok {
		n, err := strconv.ParseUint(v, 10, 5)
		if err != nil {
			return fmt.Errorf("type=%q is not a SCSI peripheral type (0-31)", v)
		}
		d.lunType = int(n)
	}
	for k, p := range map[string]*string{"vendor": &d.lunVendor, "model": &d.lunModel, "rev": &d.lunRev} {
		if v, ok := o[k]; ok {
			*p = v
		}
	}
	if o["ifaces"] == "" {
		return errors.New("plug: ifaces= needs at least one interface")
	}
	for i, s := range strings.Split(o["ifaces"], ",") {
		if i >= 32 {
			return errors.New("plug: more than 32 interfaces")
		}
		var in usbIface
		if in.class, in.sub, in.proto, err = parseCSP("ifaces", s); err != nil {
			return err
		}
		in.host = -1
		switch {
		case in.class == 9:
			in.driver = "hub"
		case in.class == 8 && in.sub == 6 && in.proto == 0x50:
			in.driver = "usb-storage"
		}
		d.ifaces = append(d.ifaces, in)
	}
	if v, ok := o["hid"]; ok {
		descs, err := parseHIDDescs(v)
		if err != nil {
			return err
		}
		n := 0
		for i := range d.ifaces {
			if d.ifaces[i].class == 3 {
				if n < len(descs) {
					d.ifaces[i].hidDesc, d.ifaces[i].driver = descs[n], "usbhid"
				}
				n++
			}
		}
		if n != len(descs) {
			return fmt.Errorf("plug: hid= gives %d descriptor(s) for %d HID (03/xx/xx) interface(s)", len(descs), n)
		}
		if m.hidSeq+n > maxHIDDevs {
			return errors.New("plug: too many HID devices")
		}
	}
	if len(m.hosts) > maxSimNumber {
		return errors.New("plug: too many SCSI hosts")
	}
	// devnum: the next after the last one given on the bus, wrapping past 127.
	used := map[int]bool{1: true}
	for _, o := range m.usb {
		if o.bus == bus {
			used[o.devnum] = true
		}
	}
	n := m.lastDev[bus]
	for range 127 {
		n = n%127 + 1
		if !used[n] {
			break
		}
	}
	if used[n] {
		return fmt.Errorf("plug: bus %d has no free device number", bus)
	}
	d.devnum, m.lastDev[bus] = n, n
	m.usb[port] = d
	if parent != "" {
		m.usb[parent].children = append(m.usb[parent].children, port)
	} else {
		m.rootHub[bus] = append(m.rootHub[bus], port)
	}
	m.plugEvents(d)
	return nil
}

func (d *usbDev) devEnv(driver bool) []string {
	env := []string{
		"MAJOR=" + strconv.Itoa(usbMajor),
		"MINOR=" + strconv.Itoa((d.bus-1)*128+d.devnum-1),
		fmt.Sprintf("DEVNAME=bus/usb/%03d/%03d", d.bus, d.devnum),
		"DEVTYPE=usb_device",
	}
	if driver {
		env = append(env, "DRIVER=usb")
	}
	return append(env, d.productEnv(), d.typeEnv(),
		fmt.Sprintf("BUSNUM=%03d", d.bus), fmt.Sprintf("DEVNUM=%03d", d.devnum))
}

func (d *usbDev) productEnv() string { return fmt.Sprintf("PRODUCT=%x/%x/%x", d.vid, d.pid, d.bcd) }
func (d *usbDev) typeEnv() string    { return fmt.Sprintf("TYPE=%d/%d/%d", d.class, d.sub, d.proto) }

func (d *usbDev) ifacePath(i int) string { return fmt.Sprintf("%s/%s:1.%d", d.path, d.port, i) }

// ifaceEnv: modalias is left out of unbind events, as the kernel does.
func (d *usbDev) ifaceEnv(i int, driver, modalias bool) []string {
	in := d.ifaces[i]
	env := []string{"DEVTYPE=usb_interface"}
	if driver {
		env = append(env, "DRIVER="+in.driver)
	}
	env = append(env, d.productEnv(), d.typeEnv(), fmt.Sprintf("INTERFACE=%d/%d/%d", in.class, in.sub, in.proto))
	if modalias {
		env = append(env, fmt.Sprintf("MODALIAS=usb:v%04Xp%04Xd%04Xdc%02Xdsc%02Xdp%02Xic%02Xisc%02Xip%02Xin%02X",
			d.vid, d.pid, d.bcd, d.class, d.sub, d.proto, in.class, in.sub, in.proto, i))
	}
	return env
}

func (d *usbDev) attrs() map[string]string {
	a := map[string]string{
		"idVendor": fmt.Sprintf("%04x", d.vid), "idProduct": fmt.Sprintf("%04x", d.pid),
		"bcdDevice": fmt.Sprintf("%04x", d.bcd), "bDeviceClass": fmt.Sprintf("%02x", d.class),
		"bDeviceSubClass": fmt.Sprintf("%02x", d.sub), "bDeviceProtocol": fmt.Sprintf("%02x", d.proto),
		"busnum": strconv.Itoa(d.bus), "devnum": strconv.Itoa(d.devnum),
		"bNumInterfaces": fmt.Sprintf("%2d", len(d.ifaces)),
		// The QEMU guest's xHCI: bus 1 is its USB 2 root hub, bus 2 its
		// USB 3 one.
		"speed": map[bool]string{true: "480", false: "5000"}[d.bus == 1],
	}
	for k, v := range map[string]string{"manufacturer": d.manufacturer, "product": d.product, "serial": d.serial} {
		if v != "" {
			a[k] = v
		}
	}
	return a
}

func (d *usbDev) ifaceAttrs(i int) map[string]string {
	in := d.ifaces[i]
	return map[string]string{
		"bInterfaceNumber": fmt.Sprintf("%02x", i), "bAlternateSetting": " 0",
		"bInterfaceClass": fmt.Sprintf("%02x", in.class), "bInterfaceSubClass": fmt.Sprintf("%02x", in.sub),
		"bInterfaceProtocol": fmt.Sprintf("%02x", in.proto),
	}
}

// plugEvents: the order of usb_new_device → usb_set_configuration: the
// device, then each interface and its driver's probe (usb-storage creates
// its SCSI host there), the device's bind, then the asynchronous SCSI scan.
func (m *machine) plugEvents(d *usbDev) {
	m.emit(hotplug.ActionAdd, d.path, "usb", d.attrs(), d.devEnv(false)...)
	if d.remoteWakeup() {
		// usb_set_configuration → device_set_wakeup_capable: the
		// wakeup attributes appear with a change event (wakeup_sysfs_add).
		m.emit(hotplug.ActionChange, d.path, "usb", nil, d.devEnv(true)...)
	}
	for i := range d.ifaces {
		ip := d.ifacePath(i)
		m.emit(hotplug.ActionAdd, ip, "usb", d.ifaceAttrs(i), d.ifaceEnv(i, false, true)...)
		if d.ifaces[i].driver == "usb-storage" {
			h := lowestFree(hostsUsed(m.hosts))
			d.ifaces[i].host = h
			host := &scsiHost{n: h, path: fmt.Sprintf("%s/host%d", ip, h), usb: true, luns: map[hotplug.HCTL]*scsiLUN{}}
			m.hosts[h] = host
			m.emit(hotplug.ActionAdd, fmt.Sprintf("/devices/virtual/workqueue/scsi_tmf_%d", h), "workqueue", nil)
			m.emit(hotplug.ActionAdd, host.path, "scsi", nil, "DEVTYPE=scsi_host")
			m.emit(hotplug.ActionAdd, fmt.Sprintf("%s/scsi_host/host%d", host.path, h), "scsi_host", nil)
		}
		if d.ifaces[i].driver == "usbhid" {
			m.hidConnect(d, i)
		}
		if d.ifaces[i].driver != "" {
			m.emit(hotplug.ActionBind, ip, "usb", nil, d.ifaceEnv(i, true, true)...)
		}
	}
	m.emit(hotplug.ActionBind, d.path, "usb", nil, d.devEnv(true)...)
	for i := range d.ifaces {
		if h := d.ifaces[i].host; h >= 0 {
			lun := &scsiLUN{hctl: hotplug.HCTL{Host: h}, typ: d.lunType, vendor: d.lunVendor, model: d.lunModel, rev: d.lunRev}
			m.addLUN(lun, true, false)
		}
	}
}

// iface finds interface iface=N of the device at port.
func (m *machine) iface(cmd, port string, o map[string]string) (*usbDev, int, error) {
	d, ok := m.usb[port]
	if !ok {
		return nil, 0, fmt.Errorf("%s: no device at port %s", cmd, port)
	}
	n, err := strconv.Atoi(o["iface"])
	if err != nil || n < 0 || n >= len(d.ifaces) {
		return nil, 0, fmt.Errorf("%s: iface=%q: device %s has interfaces 0..%d", cmd, o["iface"], port, len(d.ifaces)-1)
	}
	return d, n, nil
}

// unbind: the interface's driver lets go (usb_driver_release_interface, as
// when a user-space program claims it through usbfs and the kernel driver is
// detached): usb-storage tears down its SCSI host first, then the kernel
// reports the unbind.
func (m *machine) unbind(port string, o map[string]string) error {
	d, i, err := m.iface("unbind", port, o)
	if err != nil {
		return err
	}
	in := &d.ifaces[i]
	if in.driver == "" {
		return fmt.Errorf("unbind: interface %d of %s has no driver", i, port)
	}
	if in.host >= 0 {
		m.removeHost(in.host)
		in.host = -1
	}
	m.hidDisconnect(d, i)
	in.driver = ""
	m.emit(hotplug.ActionUnbind, d.ifacePath(i), "usb", nil, d.ifaceEnv(i, false, false)...)
	return nil
}

// bind: a driver takes the interface (usbfs for a user-space claim, or a
// kernel driver re-attached); usb-storage creates its SCSI host before the
// bind is reported and scans its LUN after, as at plug time.
func (m *machine) bind(port string, o map[string]string) error {
	d, i, err := m.iface("bind", port, o)
	if err != nil {
		return err
	}
	drv := o["driver"]
	if drv == "" {
		return errors.New("bind: want driver=NAME")
	}
	in := &d.ifaces[i]
	if in.driver != "" {
		return fmt.Errorf("bind: interface %d of %s is bound to %s", i, port, in.driver)
	}
	in.driver = drv
	ip := d.ifacePath(i)
	if drv == "usb-storage" {
		h := lowestFree(hostsUsed(m.hosts))
		in.host = h
		host := &scsiHost{n: h, path: fmt.Sprintf("%s/host%d", ip, h), usb: true, luns: map[hotplug.HCTL]*scsiLUN{}}
		m.hosts[h] = host
		m.emit(hotplug.ActionAdd, fmt.Sprintf("/devices/virtual/workqueue/scsi_tmf_%d", h), "workqueue", nil)
		m.emit(hotplug.ActionAdd, host.path, "scsi", nil, "DEVTYPE=scsi_host")
		m.emit(hotplug.ActionAdd, fmt.Sprintf("%s/scsi_host/host%d", host.path, h), "scsi_host", nil)
	}
	if drv == "usbhid" {
		if in.hidDesc == nil {
			return fmt.Errorf("bind: interface %d of %s was not plugged with a HID descriptor (hid=)", i, port)
		}
		if m.hidSeq >= maxHIDDevs {
			return errors.New("bind: too many HID devices")
		}
		m.hidConnect(d, i)
	}
	m.emit(hotplug.ActionBind, ip, "usb", nil, d.ifaceEnv(i, true, true)...)
	if in.host >= 0 {
		lun := &scsiLUN{hctl: hotplug.HCTL{Host: in.host}, typ: d.lunType, vendor: d.lunVendor, model: d.lunModel, rev: d.lunRev}
		m.addLUN(lun, true, false)
	}
	return nil
}

func hostsUsed(h map[int]*scsiHost) map[int]bool {
	u := make(map[int]bool, len(h))
	for n := range h {
		u[n] = true
	}
	return u
}

func (m *machine) unplug(port string) error {
	d, ok := m.usb[port]
	if !ok {
		return fmt.Errorf("unplug: no device at port %s", port)
	}
	m.unplugEvents(d)
	return nil
}

// unplugEvents: usb_disconnect — children first, then the interfaces in
// reverse order (each tearing down what its driver created), then the
// device.
func (m *machine) unplugEvents(d *usbDev) {
	for _, c := range slices.Backward(d.children) {
		m.unplugEvents(m.usb[c])
	}
	for i := len(d.ifaces) - 1; i >= 0; i-- {
		in := d.ifaces[i]
		if in.host >= 0 {
			m.removeHost(in.host)
		}
		m.hidDisconnect(d, i)
		if in.driver != "" {
			m.emit(hotplug.ActionUnbind, d.ifacePath(i), "usb", nil, d.ifaceEnv(i, false, false)...)
		}
		m.emit(hotplug.ActionRemove, d.ifacePath(i), "usb", nil, d.ifaceEnv(i, false, true)...)
	}
	m.emit(hotplug.ActionUnbind, d.path, "usb", nil, d.devEnv(false)...)
	m.emit(hotplug.ActionRemove, d.path, "usb", nil, d.devEnv(false)...)
	delete(m.usb, d.port)
	bus, parent, _ := parsePort(d.port)
	if parent != "" {
		if p, ok := m.usb[parent]; ok {
			p.children = slices.DeleteFunc(p.children, func(s string) bool { return s == d.port })
		}
	} else {
		m.rootHub[bus] = slices.DeleteFunc(m.rootHub[bus], func(s string) bool { return s == d.port })
	}
}

// --- SCSI ---

func targetPath(hostPath string, h hotplug.HCTL) string {
	return fmt.Sprintf("%s/target%d:%d:%d", hostPath, h.Host, h.Channel, h.Target)
}

func (m *machine) targetHasLUNs(h hotplug.HCTL) bool {
	h.LUN = 0
	return m.targetLUNs[h] > 0
}

// countLUN adds d to the LUN count of h's target.
func (m *machine) countLUN(h hotplug.HCTL, d int) {
	h.LUN = 0
	if n := m.targetLUNs[h] + d; n > 0 {
		m.targetLUNs[h] = n
	} else {
		delete(m.targetLUNs, h)
	}
}

func sdName(i int) string {
	// sda..sdz, sdaa..sdzz, sdaaa..., as sd_format_disk_name does
	// (bijective base 26).
	var b []byte
	for i++; i > 0; i = (i - 1) / 26 {
		b = append(b, byte('a'+(i-1)%26))
	}
	slices.Reverse(b)
	return "sd" + string(b)
}

func sdMajorMinor(i int) (int, int) {
	major := 8
	switch g := i >> 4; {
	case g >= 16:
		// The 16 sd majors hold 256 disks; the kernel numbers the
		// others' partitions in the extended range (major 259).
		return 259, i - 256
	case g >= 8:
		major = 128 + g - 8
	case g > 0:
		major = 64 + g
	}
	return major, (i & 15) << 4
}

// addLUN emits a LUN's arrival. usbOrder picks the order the usb-storage
// scan showed (scsi_device class before scsi_disk); virtio-scsi hot-add
// showed scsi_disk first. A LUN on an existing target adds a
// REPORTED LUNS DATA HAS CHANGED unit attention before the power-on one.
func (m *machine) addLUN(l *scsiLUN, usbOrder, targetExisted bool) {
	h := m.hosts[l.hctl.Host]
	tp := targetPath(h.path, l.hctl)
	l.path = tp + "/" + l.hctl.String()
	name := l.hctl.String()
	l.sg, l.bsg, l.disk = m.sgUsed.get(), m.bsgUsed.get(), -1
	isDisk := l.typ == 0
	if isDisk {
		l.disk = m.diskUsed.get()
		m.diskseq++
		l.diskseq = m.diskseq
	}
	m.luns[l.hctl] = l
	h.luns[l.hctl] = l
	m.countLUN(l.hctl, 1)
	modalias := fmt.Sprintf("MODALIAS=scsi:t-0x%02x", l.typ)
	if !targetExisted {
		m.emit(hotplug.ActionAdd, tp, "scsi", nil, "DEVTYPE=scsi_target")
	}
	m.emit(hotplug.ActionAdd, l.path, "scsi", l.attrs(), "DEVTYPE=scsi_device", modalias)
	sdev := func() { m.emit(hotplug.ActionAdd, l.path+"/scsi_device/"+name, "scsi_device", nil) }
	sdisk := func() {
		if isDisk {
			m.emit(hotplug.ActionAdd, l.path+"/scsi_disk/"+name, "scsi_disk", nil)
		}
	}
	if usbOrder {
		sdev()
		sdisk()
	} else {
		sdisk()
		sdev()
	}
	m.emit(hotplug.ActionAdd, fmt.Sprintf("%s/scsi_generic/sg%d", l.path, l.sg), "scsi_generic", nil,
		"MAJOR="+strconv.Itoa(sgMajor), "MINOR="+strconv.Itoa(l.sg), fmt.Sprintf("DEVNAME=sg%d", l.sg))
	m.emit(hotplug.ActionAdd, l.path+"/bsg/"+name, "bsg", nil,
		"MAJOR="+strconv.Itoa(bsgMajor), "MINOR="+strconv.Itoa(l.bsg), "DEVNAME=bsg/"+name)
	if !isDisk {
		return
	}
	if targetExisted {
		m.emit(hotplug.ActionChange, l.path, "scsi", nil, "SDEV_UA=REPORTED_LUNS_DATA_HAS_CHANGED", "DEVTYPE=scsi_device", "DRIVER=sd", modalias)
	}
	m.emit(hotplug.ActionChange, l.path, "scsi", nil, "SDEV_UA=POWER_ON_RESET_OCCURRED", "DEVTYPE=scsi_device", "DRIVER=sd", modalias)
	major, minor := sdMajorMinor(l.disk)
	m.emit(hotplug.ActionAdd, fmt.Sprintf("/devices/virtual/bdi/%d:%d", major, minor), "bdi", nil)
	dn := sdName(l.disk)
	m.emit(hotplug.ActionAdd, l.path+"/block/"+dn, "block", nil, "MAJOR="+strconv.Itoa(major), "MINOR="+strconv.Itoa(minor),
		"DEVNAME="+dn, "DEVTYPE=disk", "DISKSEQ="+strconv.FormatUint(l.diskseq, 10))
	m.emit(hotplug.ActionBind, l.path, "scsi", nil, "DEVTYPE=scsi_device", "DRIVER=sd", modalias)
}

// removeLUN: __scsi_remove_device — bsg, sg, the scsi_device class device,
// then sd's teardown (scsi_disk, bdi, block), unbind, the device, and the
// target when it was its last LUN.
func (m *machine) removeLUN(l *scsiLUN) {
	name := l.hctl.String()
	modalias := fmt.Sprintf("MODALIAS=scsi:t-0x%02x", l.typ)
	m.emit(hotplug.ActionRemove, l.path+"/bsg/"+name, "bsg", nil,
		"MAJOR="+strconv.Itoa(bsgMajor), "MINOR="+strconv.Itoa(l.bsg), "DEVNAME=bsg/"+name)
	m.emit(hotplug.ActionRemove, fmt.Sprintf("%s/scsi_generic/sg%d", l.path, l.sg), "scsi_generic", nil,
		"MAJOR="+strconv.Itoa(sgMajor), "MINOR="+strconv.Itoa(l.sg), fmt.Sprintf("DEVNAME=sg%d", l.sg))
	m.emit(hotplug.ActionRemove, l.path+"/scsi_device/"+name, "scsi_device", nil)
	if l.disk >= 0 {
		m.emit(hotplug.ActionRemove, l.path+"/scsi_disk/"+name, "scsi_disk", nil)
		major, minor := sdMajorMinor(l.disk)
		m.emit(hotplug.ActionRemove, fmt.Sprintf("/devices/virtual/bdi/%d:%d", major, minor), "bdi", nil)
		dn := sdName(l.disk)
		m.emit(hotplug.ActionRemove, l.path+"/block/"+dn, "block", nil, "MAJOR="+strconv.Itoa(major), "MINOR="+strconv.Itoa(minor),
			"DEVNAME="+dn, "DEVTYPE=disk", "DISKSEQ="+strconv.FormatUint(l.diskseq, 10))
		m.emit(hotplug.ActionUnbind, l.path, "scsi", nil, "DEVTYPE=scsi_device")
		m.diskUsed.put(l.disk)
	}
	m.emit(hotplug.ActionRemove, l.path, "scsi", nil, "DEVTYPE=scsi_device", modalias)
	m.sgUsed.put(l.sg)
	m.bsgUsed.put(l.bsg)
	delete(m.luns, l.hctl)
	delete(m.hosts[l.hctl.Host].luns, l.hctl)
	m.countLUN(l.hctl, -1)
	if !m.targetHasLUNs(l.hctl) {
		m.emit(hotplug.ActionRemove, targetPath(m.hosts[l.hctl.Host].path, l.hctl), "scsi", nil, "DEVTYPE=scsi_target")
	}
}

func (m *machine) removeHost(n int) {
	luns := slices.Collect(maps.Values(m.hosts[n].luns))
	slices.SortFunc(luns, func(a, b *scsiLUN) int { return cmpHCTL(b.hctl, a.hctl) })
	for _, l := range luns {
		m.removeLUN(l)
	}
	h := m.hosts[n]
	m.emit(hotplug.ActionRemove, fmt.Sprintf("%s/scsi_host/host%d", h.path, n), "scsi_host", nil)
	m.emit(hotplug.ActionRemove, h.path, "scsi", nil, "DEVTYPE=scsi_host")
	m.emit(hotplug.ActionRemove, fmt.Sprintf("/devices/virtual/workqueue/scsi_tmf_%d", n), "workqueue", nil)
	delete(m.hosts, n)
}

func cmpHCTL(a, b hotplug.HCTL) int {
	for _, d := range []int{a.Host - b.Host, a.Channel - b.Channel, a.Target - b.Target} {
		if d != 0 {
			return d
		}
	}
	switch {
	case a.LUN < b.LUN:
		return -1
	case a.LUN > b.LUN:
		return 1
	}
	return 0
}

func (m *machine) scsiAdd(arg string, o map[string]string) error {
	h, err := hotplug.ParseHCTL(arg)
	if err != nil {
		return fmt.Errorf("scsi add: %q is not H:C:T:L", arg)
	}
	if _, ok := m.hosts[h.Host]; !ok {
		return fmt.Errorf("scsi add: no SCSI host %d", h.Host)
	}
	if h.Channel > 7 || h.Target > 255 || h.LUN > 16383 {
		return fmt.Errorf("scsi add: %s out of range (channel ≤ 7, target ≤ 255, LUN ≤ 16383)", arg)
	}
	if _, ok := m.luns[h]; ok {
		return fmt.Errorf("scsi add: %s already present", arg)
	}
	if m.diskUsed.len() >= maxSimDisks || m.sgUsed.len() >= maxSimNumber {
		return errors.New("scsi add: too many devices")
	}
	l := &scsiLUN{hctl: h, vendor: "QEMU", model: "QEMU HARDDISK", rev: "2.5+"}
	if v, ok := o["type"]; ok {
		n, err := strconv.ParseUint(v, 10, 5)
		if err != nil {
			return fmt.Errorf("type=%q is not a SCSI peripheral type (0-31)", v)
		}
		l.typ = int(n)
	}
	for k, p := range map[string]*string{"vendor": &l.vendor, "model": &l.model, "rev": &l.rev} {
		if v, ok := o[k]; ok {
			*p = v
		}
	}
	m.addLUN(l, false, m.targetHasLUNs(h))
	return nil
}

func (m *machine) scsiRemove(arg string) error {
	h, err := hotplug.ParseHCTL(arg)
	if err != nil {
		return fmt.Errorf("scsi remove: %q is not H:C:T:L", arg)
	}
	l, ok := m.luns[h]
	if !ok {
		return fmt.Errorf("scsi remove: no device %s", arg)
	}
	m.removeLUN(l)
	return nil
}

// dup re-sends the add events of the device at port and everything it
// brought (interfaces, SCSI host, target, LUNs, sg nodes, disks), with the
// environment sysfs holds now (DRIVER included) and fresh seqnums. The
// kernel never does this; a consumer sees it when a coldplug walk overlaps
// the netlink stream, or after a resync — a duplicate add it must treat as
// a change.
func (m *machine) dup(port string) error {
	d, ok := m.usb[port]
	if !ok {
		return fmt.Errorf("dup: no device at port %s", port)
	}
	m.emit(hotplug.ActionAdd, d.path, "usb", d.attrs(), d.devEnv(true)...)
	for i := range d.ifaces {
		m.emit(hotplug.ActionAdd, d.ifacePath(i), "usb", d.ifaceAttrs(i), d.ifaceEnv(i, d.ifaces[i].driver != "", true)...)
		m.hidDup(d, i)
	}
	for i := range d.ifaces {
		hn := d.ifaces[i].host
		if hn < 0 {
			continue
		}
		h := m.hosts[hn]
		m.emit(hotplug.ActionAdd, h.path, "scsi", nil, "DEVTYPE=scsi_host")
		luns := slices.Collect(maps.Values(h.luns))
		slices.SortFunc(luns, func(a, b *scsiLUN) int { return cmpHCTL(a.hctl, b.hctl) })
		targets := map[hotplug.HCTL]bool{}
		for _, l := range luns {
			t := hotplug.HCTL{Host: l.hctl.Host, Channel: l.hctl.Channel, Target: l.hctl.Target}
			if !targets[t] {
				targets[t] = true
				m.emit(hotplug.ActionAdd, targetPath(h.path, l.hctl), "scsi", nil, "DEVTYPE=scsi_target")
			}
			modalias := fmt.Sprintf("MODALIAS=scsi:t-0x%02x", l.typ)
			if l.disk >= 0 {
				m.emit(hotplug.ActionAdd, l.path, "scsi", l.attrs(), "DEVTYPE=scsi_device", "DRIVER=sd", modalias)
			} else {
				m.emit(hotplug.ActionAdd, l.path, "scsi", l.attrs(), "DEVTYPE=scsi_device", modalias)
			}
			m.emit(hotplug.ActionAdd, fmt.Sprintf("%s/scsi_generic/sg%d", l.path, l.sg), "scsi_generic", nil,
				"MAJOR="+strconv.Itoa(sgMajor), "MINOR="+strconv.Itoa(l.sg), fmt.Sprintf("DEVNAME=sg%d", l.sg))
			if l.disk >= 0 {
				major, minor := sdMajorMinor(l.disk)
				dn := sdName(l.disk)
				m.emit(hotplug.ActionAdd, l.path+"/block/"+dn, "block", nil, "MAJOR="+strconv.Itoa(major), "MINOR="+strconv.Itoa(minor),
					"DEVNAME="+dn, "DEVTYPE=disk", "DISKSEQ="+strconv.FormatUint(l.diskseq, 10))
			}
		}
	}
	return nil
}

func (l *scsiLUN) attrs() map[string]string {
	return map[string]string{
		"type": strconv.Itoa(l.typ), "vendor": fmt.Sprintf("%-8s", l.vendor), "model": fmt.Sprintf("%-16s", l.model), "rev": l.rev,
	}
}

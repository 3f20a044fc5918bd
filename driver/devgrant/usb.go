package devgrant

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/usb"
)

// USB: a USBInterface nub's device (bus and device numbers, "busnum" and
// "devnum", on the interface nub or the device nub above it) and interface
// ("bInterfaceNumber"), for the "usb" resource (usb.Backend,
// usbstorage.BackendKey's name). The daemon claims the interface first,
// detaching the kernel's driver through the detach journal; the grant's
// Close gives the interface back and re-attaches the driver. On the kernel's
// backend (usb.Gousb, below any wrappers: the journal, the USB hold) the
// driver gets the usbfs device node /dev/bus/usb/BBB/DDD, the claim made on
// it — readied first by the wrappers (usb.ReadyClaim: the hold authorizes
// the interface it kept from the kernel) — and its privileges dropped to
// that interface (USBDEVFS_DROP_PRIVILEGES) ("usbfs"); on any other
// backend (the simulator's) the claimed device is served over a socket,
// with the same limits ("usb-socket").
const (
	USBProviderClass = "USBInterface"
	KindUsbfs        = "usbfs"
	KindUSBSocket    = "usb-socket"
	propBusNum       = "busnum"
	propDevNum       = "devnum"
	propInterface    = "bInterfaceNumber"
)

// USBKey is the USB resource, as the driver side provides it.
var USBKey = drivertable.NewKey[usb.Backend]("usb")

// usbfsRoot is where usbfs device nodes live.
const usbfsRoot = "/dev/bus/usb"

// USBNode is the usbfs node of a device: the Node of its granted File.
func USBNode(bus, addr int) string { return fmt.Sprintf("%s/%03d/%03d", usbfsRoot, bus, addr) }

// USB ops.
const (
	opUSBInfo      byte = 0x30 // → DeviceInfo as JSON
	opUSBClaim     byte = 0x31 // num u8, alt u8 →
	opUSBRelease   byte = 0x32 // num u8 →
	opUSBBulk      byte = 0x33 // ep u8, IN: length u32 | OUT: data → IN: data | OUT: count u32
	opUSBInterrupt byte = 0x34 // as bulk
	opUSBControl   byte = 0x35 // type u8, request u8, value u16, index u16, IN: length u32 | OUT: data → as bulk
	opUSBClearHalt byte = 0x36 // ep u8 →
)

var usbCodes = codeTable{
	{codeNoDevice, usb.ErrNoDevice},
	{codeClosed, usb.ErrClosed},
	{codeTimeout, usb.ErrTimeout},
	{codeStall, usb.ErrStall},
	{codeBusy, usb.ErrBusy},
	{codeOverflow, usb.ErrOverflow},
	{codeNotClaimed, usb.ErrNotClaimed},
	{codeNotGranted, ErrNotGranted},
	{codeInvalid, usb.ErrNotSupported},
}

func init() {
	Register(Class{ProviderClass: USBProviderClass, Resource: USBKey.Name(), Grant: grantUSB, Provide: provideUSB})
}

func upInt(nub *driver.Service, key string) (int64, bool) {
	if v, ok := nub.Properties().Int(key); ok {
		return v, true
	}
	for _, p := range nub.Providers() {
		if v, ok := p.Properties().Int(key); ok {
			return v, true
		}
	}
	return 0, false
}

// kernelBackend reports whether b, below its wrappers (the detach
// journal's, the USB hold's: usb.Unwrapper), is the kernel's, whose
// devices have usbfs nodes.
func kernelBackend(b usb.Backend) bool {
	_, ok := usb.Innermost(b).(*usb.Gousb)
	return ok
}

// grantUsbfsFunc is grantUsbfs; a test stands in for the kernel's usbfs.
var grantUsbfsFunc = grantUsbfs

func grantUSB(ctx context.Context, res *drivertable.Resources, nub *driver.Service) ([]File, func() error, error) {
	bus, ok1 := upInt(nub, propBusNum)
	addr, ok2 := upInt(nub, propDevNum)
	ifnum, ok3 := nub.Properties().Int(propInterface)
	if !ok1 || !ok2 || !ok3 || bus < 1 || bus > 255 || addr < 1 || addr > 255 || ifnum < 0 || ifnum > 255 {
		return nil, nil, &OpError{Op: "grant", Nub: nub.String(), Err: fmt.Errorf("%w (%s/%s/%s)", ErrNoNode, propBusNum, propDevNum, propInterface)}
	}
	node := USBNode(int(bus), int(addr))
	fail := func(err error) ([]File, func() error, error) {
		return nil, nil, grantError(nub, node, err)
	}
	b, err := USBKey.From(res)
	if err != nil {
		return fail(err)
	}
	if kernelBackend(b) {
		// The claim is made beside the backend, on the descriptor the
		// driver gets: the backend's wrappers ready it first (the USB
		// hold authorizes an interface it kept from the kernel, without
		// which usbfs refuses the claim with ENODEV).
		if err := usb.ReadyClaim(ctx, b, int(bus), int(addr), int(ifnum)); err != nil {
			return fail(err)
		}
		f, release, err := grantUsbfsFunc(usb.JournalOf(b), int(bus), int(addr), int(ifnum))
		if err != nil {
			return fail(err)
		}
		return []File{f}, release, nil
	}
	dev, err := b.Open(ctx, usb.Selector{Bus: int(bus), Address: int(addr)})
	if err != nil {
		return fail(err)
	}
	alt := 0
	for _, i := range dev.Info().Interfaces {
		if i.Number == int(ifnum) {
			alt = i.Alternate
			break
		}
	}
	if err := dev.ClaimInterface(ctx, int(ifnum), alt); err != nil {
		return fail(errors.Join(err, dev.Close()))
	}
	f, release, err := serveDevice(USBKey.Name(), node, KindUSBSocket, usbHandler(dev, int(ifnum), alt), usbCodes, dev.Close)
	if err != nil {
		return fail(err)
	}
	return []File{f}, release, nil
}

// usbScope is what a grant of one interface allows.
type usbScope struct {
	iface, alt int
	eps        map[uint8]bool
}

func scopeOf(info usb.DeviceInfo, iface, alt int) usbScope {
	s := usbScope{iface: iface, alt: alt, eps: map[uint8]bool{}}
	for _, i := range info.Interfaces {
		if i.Number != iface {
			continue
		}
		for _, e := range i.Endpoints {
			s.eps[e.Address] = true
		}
	}
	return s
}

// control refuses a control request outside the interface: one addressed
// to another interface or its endpoints, or one that changes the whole
// device (SET_ADDRESS, SET_CONFIGURATION).
func (s usbScope) control(rtype, req uint8, index uint16) error {
	switch rtype & 0x1f {
	case 0: // device
		if rtype&0x60 == 0 && (req == 0x05 || req == 0x09) {
			return fmt.Errorf("%w: standard device request %#x", ErrNotGranted, req)
		}
	case 1: // interface
		if int(index&0xff) != s.iface {
			return fmt.Errorf("%w: interface %d", ErrNotGranted, index&0xff)
		}
	case 2: // endpoint
		if ep := uint8(index); ep&0x7f != 0 && !s.eps[ep] {
			return fmt.Errorf("%w: endpoint %#02x", ErrNotGranted, ep)
		}
	}
	return nil
}

func (s usbScope) endpoint(ep uint8) error {
	if !s.eps[ep] {
		return fmt.Errorf("%w: endpoint %#02x", ErrNotGranted, ep)
	}
	return nil
}

// usbHandler serves a usb.Device whose interface iface the daemon claimed
// with alternate setting alt, within that interface.
func usbHandler(dev usb.Device, iface, alt int) handler {
	scope := scopeOf(dev.Info(), iface, alt)
	return func(ctx context.Context, op byte, body []byte, out []byte) ([]byte, error) {
		r := reader{b: body}
		switch op {
		case opUSBInfo:
			if err := r.done(); err != nil {
				return nil, err
			}
			b, err := json.Marshal(dev.Info())
			if err != nil {
				return nil, err
			}
			return append(out, b...), nil
		case opUSBClaim, opUSBRelease:
			num := int(r.u8())
			alt := 0
			if op == opUSBClaim {
				alt = int(r.u8())
			}
			if err := r.done(); err != nil {
				return nil, err
			}
			if num != scope.iface {
				return nil, fmt.Errorf("%w: interface %d", ErrNotGranted, num)
			}
			if op == opUSBClaim && alt != scope.alt {
				// usb.Device has no way to switch settings: the
				// daemon's claim chose it.
				return nil, fmt.Errorf("%w: alternate setting %d (the grant's is %d)", usb.ErrNotSupported, alt, scope.alt)
			}
			// The daemon's claim stands until the grant ends: the
			// kernel driver comes back then, not while the driver runs.
			return out, nil
		case opUSBBulk, opUSBInterrupt, opUSBControl:
			var rtype, req uint8
			var val, idx uint16
			var ep uint8
			if op == opUSBControl {
				rtype, req, val, idx = r.u8(), r.u8(), r.u16(), r.u16()
				ep = rtype & usb.EndpointIn
			} else {
				ep = r.u8()
			}
			in := ep&usb.EndpointIn != 0
			var buf []byte
			n := 0
			if in {
				n = r.size()
			} else {
				buf = r.rest()
			}
			if err := r.done(); err != nil {
				return nil, err
			}
			var err error
			if op == opUSBControl {
				err = scope.control(rtype, req, idx)
			} else {
				err = scope.endpoint(ep)
			}
			if err != nil {
				return nil, err
			}
			head := len(out)
			if in {
				out = slices.Grow(out, n)[:head+n]
				buf = out[head:]
			}
			var k int
			switch op {
			case opUSBBulk:
				k, err = dev.BulkTransfer(ctx, ep, buf)
			case opUSBInterrupt:
				k, err = dev.InterruptTransfer(ctx, ep, buf)
			default:
				k, err = dev.Control(ctx, rtype, req, val, idx, buf)
			}
			if err != nil {
				return nil, err
			}
			if in {
				return out[:head+min(max(k, 0), n)], nil
			}
			return binary.LittleEndian.AppendUint32(out, uint32(k)), nil
		case opUSBClearHalt:
			ep := r.u8()
			if err := r.done(); err != nil {
				return nil, err
			}
			if err := scope.endpoint(ep); err != nil {
				return nil, err
			}
			return out, dev.ClearHalt(ctx, ep)
		}
		return nil, fmt.Errorf("%w: unknown USB op %#x", ErrProtocol, op)
	}
}

func provideUSB(r *drivertable.Resources, files []Received) {
	b := &usbBackend{files: files, socks: newSockets(usbCodes, usb.ErrNoDevice)}
	drivertable.Provide(r, USBKey, func() (usb.Backend, error) { return b, nil })
}

// usbBackend opens the granted USB devices, and only those.
type usbBackend struct {
	files []Received
	socks *sockets
}

var _ usb.Backend = (*usbBackend)(nil)

// Devices lists the granted devices.
func (b *usbBackend) Devices(ctx context.Context) ([]usb.DeviceInfo, error) {
	var out []usb.DeviceInfo
	for _, f := range b.files {
		d, err := b.open(ctx, f)
		if err != nil {
			return out, err
		}
		out = append(out, d.Info())
		d.Close()
	}
	return out, nil
}

// Open opens the granted device sel picks; any other is ErrNotGranted.
func (b *usbBackend) Open(ctx context.Context, sel usb.Selector) (usb.Device, error) {
	op := "open " + sel.String()
	if sel.Bus != 0 {
		f, err := find(b.files, USBNode(sel.Bus, sel.Address))
		if err != nil {
			return nil, &usb.OpError{Op: op, Err: err}
		}
		return b.open(ctx, f)
	}
	for _, f := range b.files {
		d, err := b.open(ctx, f)
		if err != nil {
			return nil, err
		}
		if sel.Matches(d.Info()) && (sel.Serial == "" || sel.Serial == d.Info().Serial) {
			return d, nil
		}
		d.Close()
	}
	return nil, &usb.OpError{Op: op, Err: ErrNotGranted}
}

func (b *usbBackend) open(ctx context.Context, f Received) (usb.Device, error) {
	op := "open " + f.Node
	switch f.Kind {
	case KindUsbfs:
		return openUsbfsDevice(f)
	case KindUSBSocket:
		d, err := openSockDev(b.socks, f)
		if err != nil {
			return nil, &usb.OpError{Op: op, Err: err}
		}
		s := &usbSock{d: d}
		r, err := d.call(ctx, request(opUSBInfo, 0))
		if err == nil {
			err = json.Unmarshal(r, &s.info)
		}
		if err != nil {
			d.close()
			return nil, s.err(op, err)
		}
		return s, nil
	}
	return nil, &usb.OpError{Op: op, Err: fmt.Errorf("%w: kind %q", ErrNotGranted, f.Kind)}
}

// ReattachAll does nothing: the daemon gives back what it detached, when
// the grant ends.
func (b *usbBackend) ReattachAll() error { return nil }

// Close does nothing; each device is closed by its user.
func (b *usbBackend) Close() error { return nil }

// usbSock is a usb.Device served over a socket.
type usbSock struct {
	d    *sockDev
	info usb.DeviceInfo

	mu      sync.Mutex
	claimed map[int]bool
}

var _ usb.Device = (*usbSock)(nil)

func (s *usbSock) err(op string, err error) error {
	if errors.Is(err, errClosedSocket) {
		err = usb.ErrClosed
	}
	return &usb.OpError{Op: op, Err: err}
}

func (s *usbSock) Info() usb.DeviceInfo { return s.info }

func (s *usbSock) ClaimInterface(ctx context.Context, num, alt int) error {
	op := fmt.Sprintf("claim interface %d.%d", num, alt)
	if num < 0 || num > 255 || alt < 0 || alt > 255 {
		return &usb.OpError{Op: op, Err: usb.ErrNotFound}
	}
	if _, err := s.d.call(ctx, append(request(opUSBClaim, 2), byte(num), byte(alt))); err != nil {
		return s.err(op, err)
	}
	s.mu.Lock()
	if s.claimed == nil {
		s.claimed = map[int]bool{}
	}
	s.claimed[num] = true
	s.mu.Unlock()
	return nil
}

func (s *usbSock) ReleaseInterface(num int) error {
	op := fmt.Sprintf("release interface %d", num)
	s.mu.Lock()
	claimed := s.claimed[num]
	delete(s.claimed, num)
	s.mu.Unlock()
	if !claimed {
		return &usb.OpError{Op: op, Err: usb.ErrNotClaimed}
	}
	if _, err := s.d.call(context.Background(), append(request(opUSBRelease, 1), byte(num))); err != nil {
		return s.err(op, err)
	}
	return nil
}

func (s *usbSock) transfer(ctx context.Context, op byte, name string, pkt []byte, in bool, buf []byte) (int, error) {
	if len(buf) > MaxData {
		return 0, &usb.OpError{Op: name, Err: fmt.Errorf("%w: %d bytes over the device socket's %d", usb.ErrNotSupported, len(buf), MaxData)}
	}
	if in {
		pkt = binary.LittleEndian.AppendUint32(pkt, uint32(len(buf)))
	} else {
		pkt = append(pkt, buf...)
	}
	r, err := s.d.call(ctx, pkt)
	if err != nil {
		return 0, s.err(name, err)
	}
	if in {
		return copy(buf, r), nil
	}
	rd := reader{b: r}
	n := int(rd.u32())
	if err := rd.done(); err != nil {
		return 0, s.err(name, err)
	}
	return n, nil
}

func xferName(kind string, ep uint8) string {
	dir := "out"
	if ep&usb.EndpointIn != 0 {
		dir = "in"
	}
	return fmt.Sprintf("%s %s %#02x", kind, dir, ep)
}

func (s *usbSock) BulkTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return s.transfer(ctx, opUSBBulk, xferName("bulk", ep), append(request(opUSBBulk, 5+len(buf)), ep), ep&usb.EndpointIn != 0, buf)
}

func (s *usbSock) InterruptTransfer(ctx context.Context, ep uint8, buf []byte) (int, error) {
	return s.transfer(ctx, opUSBInterrupt, xferName("interrupt", ep), append(request(opUSBInterrupt, 5+len(buf)), ep), ep&usb.EndpointIn != 0, buf)
}

func (s *usbSock) Control(ctx context.Context, rtype, req uint8, val, idx uint16, data []byte) (int, error) {
	pkt := append(request(opUSBControl, 10+len(data)), rtype, req)
	pkt = binary.LittleEndian.AppendUint16(pkt, val)
	pkt = binary.LittleEndian.AppendUint16(pkt, idx)
	return s.transfer(ctx, opUSBControl, fmt.Sprintf("control %#02x/%#02x", rtype, req), pkt, rtype&usb.EndpointIn != 0, data)
}

func (s *usbSock) ClearHalt(ctx context.Context, ep uint8) error {
	if _, err := s.d.call(ctx, append(request(opUSBClearHalt, 1), ep)); err != nil {
		return s.err(fmt.Sprintf("clear halt %#02x", ep), err)
	}
	return nil
}

// Detached is empty: the daemon detached the kernel driver, and gives it
// back when the grant ends.
func (s *usbSock) Detached() []usb.KernelDriver { return nil }

func (s *usbSock) Close() error {
	if !s.d.close() {
		return &usb.OpError{Op: "close " + s.d.node, Err: usb.ErrClosed}
	}
	return nil
}

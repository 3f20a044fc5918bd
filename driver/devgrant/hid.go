package devgrant

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/drivertable"
	"github.com/drvkit/drvkit/driver/hid"
)

// HID: a HIDDevice nub's hidraw node (its "hidraw" property, as
// hotplug/hidbus publishes it), for the "hidraw" resource (hid.Backend,
// hidkbd.BackendKey's name). On the kernel's backend (hid.Hidraw) the
// daemon opens the node and passes it ("hidraw"); on any other backend
// (the simulator's) it opens the device there and serves it over a socket
// ("hid-socket").
const (
	HIDProviderClass = "HIDDevice"
	KindHidraw       = "hidraw"
	KindHIDSocket    = "hid-socket"
	propHidraw       = "hidraw"
)

// HIDKey is the HID resource, as the driver side provides it.
var HIDKey = drivertable.NewKey[hid.Backend]("hidraw")

// HID ops.
const (
	opHIDInfo       byte = 0x10 // → bus u32, vendor u16, product u16
	opHIDDescriptor byte = 0x11 // → descriptor
	opHIDRead       byte = 0x12 // max u32 → report
	opHIDWrite      byte = 0x13 // report →
	opHIDSetFeature byte = 0x14 // report →
	opHIDGetFeature byte = 0x15 // id u8, max u32 → report
)

var hidCodes = codeTable{
	{codeNoDevice, hid.ErrNoDevice},
	{codeClosed, hid.ErrClosed},
	{codeInvalid, hid.ErrReportSize},
	{codeNotGranted, ErrNotGranted},
}

func init() {
	Register(Class{ProviderClass: HIDProviderClass, Resource: HIDKey.Name(), Grant: grantHID, Provide: provideHID})
}

func grantHID(ctx context.Context, res *drivertable.Resources, nub *driver.Service) ([]File, func() error, error) {
	node, ok := nub.Properties().String(propHidraw)
	if !ok || node == "" {
		return nil, nil, &OpError{Op: "grant", Nub: nub.String(), Err: fmt.Errorf("%w (%s)", ErrNoNode, propHidraw)}
	}
	fail := func(err error) ([]File, func() error, error) {
		return nil, nil, grantError(nub, node, err)
	}
	b, err := HIDKey.From(res)
	if err != nil {
		return fail(err)
	}
	if _, ok := b.(hid.Hidraw); ok {
		f, err := openNode(node)
		if err != nil {
			return fail(err)
		}
		return []File{{Resource: HIDKey.Name(), Node: node, Kind: KindHidraw, File: f}}, nil, nil
	}
	dev, err := b.Open(node)
	if err != nil {
		return fail(err)
	}
	f, release, err := serveDevice(HIDKey.Name(), node, KindHIDSocket, hidHandler(dev), hidCodes, dev.Close)
	if err != nil {
		return fail(err)
	}
	return []File{f}, release, nil
}

// hidHandler serves a hid.Device's methods.
func hidHandler(dev hid.Device) handler {
	return func(ctx context.Context, op byte, body []byte, out []byte) ([]byte, error) {
		r := reader{b: body}
		switch op {
		case opHIDInfo:
			if err := r.done(); err != nil {
				return nil, err
			}
			info, err := dev.Info()
			if err != nil {
				return nil, err
			}
			out = binary.LittleEndian.AppendUint32(out, info.Bus)
			out = binary.LittleEndian.AppendUint16(out, info.Vendor)
			return binary.LittleEndian.AppendUint16(out, info.Product), nil
		case opHIDDescriptor:
			if err := r.done(); err != nil {
				return nil, err
			}
			d, err := dev.ReportDescriptor()
			if err != nil {
				return nil, err
			}
			return append(out, d...), nil
		case opHIDRead:
			n := r.size()
			if err := r.done(); err != nil {
				return nil, err
			}
			out = slices.Grow(out, n)
			k, err := dev.ReadInput(ctx, out[len(out):len(out)+n])
			if err != nil {
				return nil, err
			}
			return out[:len(out)+k], nil
		case opHIDWrite, opHIDSetFeature:
			rep := r.rest()
			if err := r.done(); err != nil {
				return nil, err
			}
			if op == opHIDWrite {
				return out, dev.WriteOutput(rep)
			}
			return out, dev.SetFeature(rep)
		case opHIDGetFeature:
			id := r.u8()
			n := r.size()
			if err := r.done(); err != nil {
				return nil, err
			}
			out = slices.Grow(out, n)
			k, err := dev.GetFeature(id, out[len(out):len(out)+n])
			if err != nil {
				return nil, err
			}
			return out[:len(out)+k], nil
		}
		return nil, fmt.Errorf("%w: unknown HID op %#x", ErrProtocol, op)
	}
}

func provideHID(r *drivertable.Resources, files []Received) {
	b := &hidBackend{files: files, socks: newSockets(hidCodes, hid.ErrNoDevice)}
	drivertable.Provide(r, HIDKey, func() (hid.Backend, error) { return b, nil })
}

// hidBackend opens the granted hidraw nodes, and only those.
type hidBackend struct {
	files []Received
	socks *sockets
}

var _ hid.Backend = (*hidBackend)(nil)

func (b *hidBackend) Open(node string) (hid.Device, error) {
	f, err := find(b.files, node)
	if err != nil {
		return nil, &hid.OpError{Op: "open", Node: node, Err: err}
	}
	switch f.Kind {
	case KindHidraw:
		return hid.FromFile(f.File, node)
	case KindHIDSocket:
		d, err := openSockDev(b.socks, f)
		if err != nil {
			return nil, &hid.OpError{Op: "open", Node: node, Err: err}
		}
		return &hidSock{d: d}, nil
	}
	return nil, &hid.OpError{Op: "open", Node: node, Err: fmt.Errorf("%w: kind %q", ErrNotGranted, f.Kind)}
}

// hidSock is a hid.Device served over a socket.
type hidSock struct{ d *sockDev }

var _ hid.Device = (*hidSock)(nil)

func (h *hidSock) err(op string, err error) error {
	if errors.Is(err, errClosedSocket) {
		err = hid.ErrClosed
	}
	return &hid.OpError{Op: op, Node: h.d.node, Err: err}
}

func (h *hidSock) Info() (hid.Info, error) {
	r, err := h.d.call(context.Background(), request(opHIDInfo, 0))
	if err != nil {
		return hid.Info{}, h.err("ioctl HIDIOCGRAWINFO", err)
	}
	rd := reader{b: r}
	info := hid.Info{Bus: rd.u32(), Vendor: rd.u16(), Product: rd.u16()}
	if err := rd.done(); err != nil {
		return hid.Info{}, h.err("ioctl HIDIOCGRAWINFO", err)
	}
	return info, nil
}

func (h *hidSock) ReportDescriptor() ([]byte, error) {
	r, err := h.d.call(context.Background(), request(opHIDDescriptor, 0))
	if err != nil {
		return nil, h.err("ioctl HIDIOCGRDESC", err)
	}
	return r, nil
}

func (h *hidSock) ReadInput(ctx context.Context, p []byte) (int, error) {
	pkt := binary.LittleEndian.AppendUint32(request(opHIDRead, 4), uint32(min(len(p), MaxData)))
	r, err := h.d.call(ctx, pkt)
	if err != nil {
		if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			return 0, ctx.Err()
		}
		return 0, h.err("read", err)
	}
	return copy(p, r), nil
}

func (h *hidSock) write(op byte, name string, report []byte) error {
	if len(report) < 2 || len(report) > MaxData {
		return &hid.OpError{Op: name, Node: h.d.node, Err: hid.ErrReportSize}
	}
	if _, err := h.d.call(context.Background(), append(request(op, len(report)), report...)); err != nil {
		return h.err(name, err)
	}
	return nil
}

func (h *hidSock) WriteOutput(report []byte) error { return h.write(opHIDWrite, "write", report) }

func (h *hidSock) SetFeature(report []byte) error {
	return h.write(opHIDSetFeature, "ioctl HIDIOCSFEATURE", report)
}

func (h *hidSock) GetFeature(id byte, p []byte) (int, error) {
	if len(p) < 2 {
		return 0, &hid.OpError{Op: "ioctl HIDIOCGFEATURE", Node: h.d.node, Err: hid.ErrReportSize}
	}
	pkt := binary.LittleEndian.AppendUint32(append(request(opHIDGetFeature, 5), id), uint32(min(len(p), MaxData)))
	r, err := h.d.call(context.Background(), pkt)
	if err != nil {
		return 0, h.err("ioctl HIDIOCGFEATURE", err)
	}
	return copy(p, r), nil
}

func (h *hidSock) Close() error {
	if !h.d.close() {
		return &hid.OpError{Op: "close", Node: h.d.node, Err: hid.ErrClosed}
	}
	return nil
}

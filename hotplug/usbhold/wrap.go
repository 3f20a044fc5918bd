package usbhold

import (
	"context"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/driver/usb"
)

// Wrap returns b with every interface claim readied by [Hold.Claim]: a held
// interface is authorized just before drvkit claims it. The wrapper is a
// [usb.ClaimReadier] and a [usb.Unwrapper]: a claim made beside it, on a
// usbfs descriptor of the caller's (package devgrant's grant to a driver
// process), is readied by [usb.ReadyClaim], and the backend below (the
// kernel's, journaled or not) stays visible to [usb.JournalOf] and to
// whoever decides by it.
func (h *Hold) Wrap(b usb.Backend) usb.Backend { return &backend{Backend: b, h: h} }

type backend struct {
	usb.Backend
	h *Hold
}

var (
	_ usb.Backend      = (*backend)(nil)
	_ usb.KernelBinder = (*backend)(nil)
	_ usb.ClaimReadier = (*backend)(nil)
	_ usb.Unwrapper    = (*backend)(nil)
	_ usb.Device       = (*device)(nil)
)

func (b *backend) Open(ctx context.Context, sel usb.Selector) (usb.Device, error) {
	d, err := b.Backend.Open(ctx, sel)
	if err != nil {
		return nil, err
	}
	return &device{Device: d, h: b.h}, nil
}

// Unwrap returns the wrapped backend.
func (b *backend) Unwrap() usb.Backend { return b.Backend }

// ReadyClaim readies a claim made beside the backend: see [Hold.ReadyClaim].
func (b *backend) ReadyClaim(ctx context.Context, bus, addr, iface int) error {
	return b.h.ReadyClaim(ctx, bus, addr, iface)
}

// BindKernelDriver passes through (the detach journal's recovery uses it).
func (b *backend) BindKernelDriver(ctx context.Context, sel usb.Selector, iface int, driver string) error {
	kb, ok := b.Backend.(usb.KernelBinder)
	if !ok {
		return &usb.OpError{Op: "re-attach " + driver, Err: usb.ErrNotSupported}
	}
	return kb.BindKernelDriver(ctx, sel, iface, driver)
}

type device struct {
	usb.Device
	h *Hold
}

func (d *device) ClaimInterface(ctx context.Context, num, alt int) error {
	if name, ok := InterfaceName(d.Info(), num); ok {
		if err := d.h.Claim(ctx, name); err != nil {
			return err
		}
	}
	return d.Device.ClaimInterface(ctx, num, alt)
}

// InterfaceName is the kernel's name of interface num of an open device,
// "BUS-PORT[.PORT...]:CONFIG.NUM"; false when info lacks the port path or
// the configuration.
func InterfaceName(info usb.DeviceInfo, num int) (string, bool) {
	if info.Bus <= 0 || len(info.Port) == 0 || info.Config <= 0 || num < 0 {
		return "", false
	}
	ports := make([]string, len(info.Port))
	for i, p := range info.Port {
		ports[i] = strconv.Itoa(p)
	}
	name := strconv.Itoa(info.Bus) + "-" + strings.Join(ports, ".") + ":" + strconv.Itoa(info.Config) + "." + strconv.Itoa(num)
	if _, _, ok := interfaceBus(name); !ok {
		return "", false
	}
	return name, true
}

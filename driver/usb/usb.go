package usb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors.
var (
	ErrNoDevice     = errors.New("no such device (it may have been unplugged)")
	ErrBusy         = errors.New("device or interface busy")
	ErrTimeout      = errors.New("transfer timed out")
	ErrNotFound     = errors.New("not found")
	ErrStall        = errors.New("endpoint stalled")
	ErrAccess       = errors.New("access denied")
	ErrOverflow     = errors.New("transfer overflow")
	ErrClosed       = errors.New("device closed")
	ErrNotClaimed   = errors.New("interface not claimed")
	ErrNotSupported = errors.New("not supported")
	ErrInit         = errors.New("usb initialisation failed")
	// ErrBound: KernelBinder found the driver bound already; nothing
	// changed.
	ErrBound = errors.New("kernel driver bound already")
)

// OpError records the operation that failed and why.
type OpError struct {
	Op  string // e.g. "bulk in 0x81", "claim interface 0"
	Err error
}

func (e *OpError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// TransferType is an endpoint's transfer type.
type TransferType uint8

const (
	TransferControl TransferType = iota
	TransferIsochronous
	TransferBulk
	TransferInterrupt
)

func (t TransferType) String() string {
	switch t {
	case TransferControl:
		return "control"
	case TransferIsochronous:
		return "isochronous"
	case TransferBulk:
		return "bulk"
	case TransferInterrupt:
		return "interrupt"
	}
	return "unknown"
}

// EndpointIn is the direction bit of an endpoint address.
const EndpointIn = 0x80

// Endpoint describes one endpoint of an interface setting.
type Endpoint struct {
	Address       uint8 // with EndpointIn for IN endpoints
	Type          TransferType
	MaxPacketSize int
}

// In reports whether the endpoint is device-to-host.
func (e Endpoint) In() bool { return e.Address&EndpointIn != 0 }

// Interface describes one interface alternate setting.
type Interface struct {
	Number, Alternate         int
	Class, SubClass, Protocol uint8
	Endpoints                 []Endpoint
}

// Endpoint returns the first endpoint with the given type and direction.
func (i Interface) Endpoint(t TransferType, in bool) (Endpoint, bool) {
	for _, e := range i.Endpoints {
		if e.Type == t && e.In() == in {
			return e, true
		}
	}
	return Endpoint{}, false
}

// DeviceInfo describes a device and its active configuration.
type DeviceInfo struct {
	Bus, Address              int
	Port                      []int // port path from the root hub
	Vendor, Product           uint16
	Class, SubClass, Protocol uint8
	Serial                    string // filled once the device is open
	Config                    int    // active configuration number
	Interfaces                []Interface
}

func (d DeviceInfo) String() string {
	return fmt.Sprintf("%03d/%03d %04x:%04x", d.Bus, d.Address, d.Vendor, d.Product)
}

// Selector picks a device: by bus and address when Bus is non-zero,
// otherwise by vendor:product and, if not empty, serial number.
type Selector struct {
	Bus, Address    int
	Vendor, Product uint16
	Serial          string
}

// NotFoundError is how a Backend's Open says nothing matches sel: for a
// selector naming one device by bus and address — a device that was there,
// since addresses are assigned at enumeration — it is gone, and the error
// matches ErrNoDevice as well as ErrNotFound, so that a driver whose device
// was unplugged before Start opened it reports what every other path
// reports for an unplugged device.
func NotFoundError(sel Selector) error {
	if sel.Bus != 0 && sel.Address != 0 {
		return goneError{}
	}
	return ErrNotFound
}

type goneError struct{}

func (goneError) Error() string        { return "no such device (unplugged before it was opened)" }
func (goneError) Is(target error) bool { return target == ErrNoDevice || target == ErrNotFound }

// ParseSelector parses "BUS/ADDR" (as in /dev/bus/usb/BUS/ADDR) or
// "VID:PID[:SERIAL]" with hexadecimal IDs.
func ParseSelector(s string) (Selector, error) {
	if b, a, ok := strings.Cut(s, "/"); ok {
		bus, err1 := strconv.ParseUint(b, 10, 8)
		addr, err2 := strconv.ParseUint(a, 10, 8)
		if err1 != nil || err2 != nil || bus == 0 || addr == 0 {
			return Selector{}, fmt.Errorf("bad selector %q: want BUS/ADDR with numbers 1-255", s)
		}
		return Selector{Bus: int(bus), Address: int(addr)}, nil
	}
	parts := strings.SplitN(s, ":", 3)
	if len(parts) < 2 {
		return Selector{}, fmt.Errorf("bad selector %q: want BUS/ADDR or VID:PID[:SERIAL]", s)
	}
	vid, err1 := strconv.ParseUint(parts[0], 16, 16)
	pid, err2 := strconv.ParseUint(parts[1], 16, 16)
	if err1 != nil || err2 != nil {
		return Selector{}, fmt.Errorf("bad selector %q: vendor and product are 4 hex digits", s)
	}
	sel := Selector{Vendor: uint16(vid), Product: uint16(pid)}
	if len(parts) == 3 {
		sel.Serial = parts[2]
	}
	return sel, nil
}

func (s Selector) String() string {
	if s.Bus != 0 {
		return fmt.Sprintf("%03d/%03d", s.Bus, s.Address)
	}
	if s.Serial != "" {
		return fmt.Sprintf("%04x:%04x:%s", s.Vendor, s.Product, s.Serial)
	}
	return fmt.Sprintf("%04x:%04x", s.Vendor, s.Product)
}

// Matches reports whether info satisfies the selector, ignoring the serial
// number (which needs an open device).
func (s Selector) Matches(info DeviceInfo) bool {
	if s.Bus != 0 {
		return info.Bus == s.Bus && info.Address == s.Address
	}
	return info.Vendor == s.Vendor && info.Product == s.Product
}

// Backend enumerates and opens USB devices.
type Backend interface {
	// Devices lists the devices present now.
	Devices(ctx context.Context) ([]DeviceInfo, error)
	// Open opens the device sel picks; ErrNotFound if there is none.
	Open(ctx context.Context, sel Selector) (Device, error)
	// ReattachAll releases every claimed interface of every open device and
	// re-attaches the kernel drivers drvkit detached; for daemon exit.
	ReattachAll() error
	// Close closes all open devices (re-attaching kernel drivers) and the
	// backend.
	Close() error
}

// KernelDriver records a kernel driver drvkit detached from an interface.
type KernelDriver struct {
	Interface int
	Driver    string // e.g. "usb-storage"
}

// Device is an open USB device. Its methods are safe for concurrent use.
type Device interface {
	Info() DeviceInfo
	// ClaimInterface claims interface num with alternate setting alt. A
	// kernel driver bound to it is detached first and recorded; a claim
	// held by another program gives ErrBusy.
	ClaimInterface(ctx context.Context, num, alt int) error
	// ReleaseInterface releases the interface and re-attaches the kernel
	// driver detached from it, if any.
	ReleaseInterface(num int) error
	// BulkTransfer reads (IN endpoint) or writes buf; it returns the bytes
	// moved, which may be fewer than len(buf) even without error.
	BulkTransfer(ctx context.Context, endpoint uint8, buf []byte) (int, error)
	InterruptTransfer(ctx context.Context, endpoint uint8, buf []byte) (int, error)
	// Control performs a control transfer on endpoint 0.
	Control(ctx context.Context, requestType, request uint8, value, index uint16, data []byte) (int, error)
	// ClearHalt clears a stall on endpoint.
	ClearHalt(ctx context.Context, endpoint uint8) error
	// Detached lists the kernel drivers detached and not yet re-attached.
	Detached() []KernelDriver
	// Close cancels in-flight transfers, releases interfaces, re-attaches
	// kernel drivers and closes the device.
	Close() error
}

// Standard request values used by this package and its users.
const (
	RequestClearFeature = 0x01
	FeatureEndpointHalt = 0x00
	// RecipientEndpoint | TypeStandard | host-to-device.
	RequestTypeEndpointOut = 0x02
)

package hid

import (
	"context"
	"errors"

	"github.com/drvkit/drvkit/driver"
)

// Errors. Those of a Device are wrapped in *OpError.
var (
	// ErrNoDevice: the device was unplugged (or never was there).
	ErrNoDevice = driver.ErrNoDevice
	// ErrClosed: the Device was closed.
	ErrClosed = errors.New("device closed")
	// ErrNotSupported: hidraw needs Linux.
	ErrNotSupported = errors.New("hidraw needs Linux")
	// ErrReportSize: a report (its ID byte included) is shorter than two
	// bytes or longer than MaxReportSize; hidraw refuses the short ones
	// with EINVAL.
	ErrReportSize = errors.New("report size out of range")
)

// MaxReportSize bounds one report (the kernel's HID_MAX_BUFFER_SIZE).
const MaxReportSize = 16384

// Bus types (linux/input.h BUS_*) as HID_ID and HIDIOCGRAWINFO report them.
const (
	BusUSB       = 0x03
	BusBluetooth = 0x05
	BusVirtual   = 0x06
	BusI2C       = 0x18
)

// Info identifies a device (HIDIOCGRAWINFO).
type Info struct {
	Bus     uint32
	Vendor  uint16
	Product uint16
}

// Backend opens hidraw nodes.
type Backend interface {
	// Open opens a node such as /dev/hidraw0 for reading and writing.
	Open(node string) (Device, error)
}

// Device is an open hidraw node. Its methods may be called from several
// goroutines; Close ends a read in progress with ErrClosed.
type Device interface {
	// Info returns the bus type and ids.
	Info() (Info, error)
	// ReportDescriptor returns the report descriptor.
	ReportDescriptor() ([]byte, error)
	// ReadInput waits for the next input report and copies it into p
	// (with its report ID first when the device numbers its reports),
	// returning its length, or fails when ctx ends (ctx.Err()), the
	// device goes (ErrNoDevice) or Close is called (ErrClosed). A report
	// longer than p is truncated, as read(2) on hidraw does.
	ReadInput(ctx context.Context, p []byte) (int, error)
	// WriteOutput sends an output report: its report ID first (0 when
	// the device does not number reports), then the data; a report
	// without its ID byte is refused (ErrReportSize), as hidraw does.
	WriteOutput(report []byte) error
	// SetFeature sends a feature report (report ID first).
	SetFeature(report []byte) error
	// GetFeature reads feature report id into p (p[0] is set to id; the
	// device's reply, report ID first, overwrites p) and returns its
	// length.
	GetFeature(id byte, p []byte) (int, error)
	// Close releases the node.
	Close() error
}

// OpError is a failed operation on a node.
type OpError struct {
	Op   string // "open", "read", "write", "ioctl HIDIOCSFEATURE", ...
	Node string // e.g. /dev/hidraw0
	Err  error
}

func (e *OpError) Error() string {
	if e.Node == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Op + " " + e.Node + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

package hidsim

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/drvkit/drvkit/driver/hid"
)

// queueLen is hidraw's per-open buffer (HIDRAW_BUFFER_SIZE).
const queueLen = 64

// Spec describes a device.
type Spec struct {
	Info       hid.Info
	Descriptor []byte // its report descriptor; nil means hid.BootKeyboard
}

// Backend is a set of simulated hidraw nodes.
type Backend struct {
	mu   sync.Mutex
	devs map[string]*Device
}

var _ hid.Backend = (*Backend)(nil)

// New returns a backend with no device.
func New() *Backend { return &Backend{devs: map[string]*Device{}} }

// Plug makes a device appear at node (e.g. /dev/hidraw0), replacing (and
// unplugging) one already there.
func (b *Backend) Plug(node string, spec Spec) *Device {
	if spec.Descriptor == nil {
		spec.Descriptor = hid.BootKeyboard
	}
	d := &Device{b: b, node: node, spec: spec, features: map[byte][]byte{}}
	d.desc, _ = hid.ParseReportDescriptor(spec.Descriptor)
	b.mu.Lock()
	old := b.devs[node]
	b.devs[node] = d
	b.mu.Unlock()
	if old != nil {
		old.Unplug()
	}
	return d
}

// Device returns the device at node, or nil.
func (b *Backend) Device(node string) *Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.devs[node]
}

// Open implements hid.Backend.
func (b *Backend) Open(node string) (hid.Device, error) {
	b.mu.Lock()
	d := b.devs[node]
	b.mu.Unlock()
	if d == nil {
		return nil, &hid.OpError{Op: "open", Node: node, Err: hid.ErrNoDevice}
	}
	return d.open()
}

// Device is a simulated HID device.
type Device struct {
	b    *Backend
	node string
	spec Spec
	desc *hid.ReportDescriptor // nil when the descriptor does not parse

	mu        sync.Mutex
	gone      bool
	early     [][]byte // reports before the first open
	opened    int
	handles   []*handle
	outputs   [][]byte
	setFeats  [][]byte
	features  map[byte][]byte
	onOutput  func([]byte) error
	onFeature func([]byte) error
}

// Node returns the device's node.
func (d *Device) Node() string { return d.node }

// Input sends an input report to every open handle (to the first one to
// open, if none is open yet). It reports false if the device is unplugged.
func (d *Device) Input(report []byte) bool {
	r := slices.Clone(report)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		return false
	}
	if d.opened == 0 {
		d.early = appendBounded(d.early, r)
		return true
	}
	for _, h := range d.handles {
		h.push(r)
	}
	return true
}

func appendBounded(q [][]byte, r []byte) [][]byte {
	if len(q) >= queueLen {
		q = q[1:] // the oldest is dropped, as hidraw does
	}
	return append(q, r)
}

// Unplug removes the device: reads waiting and every later call fail with
// hid.ErrNoDevice (reports already queued are read first).
func (d *Device) Unplug() {
	d.b.mu.Lock()
	if d.b.devs[d.node] == d {
		delete(d.b.devs, d.node)
	}
	d.b.mu.Unlock()
	d.mu.Lock()
	d.gone = true
	hs := slices.Clone(d.handles)
	d.mu.Unlock()
	for _, h := range hs {
		h.wake()
	}
}

// SetFeatureReport sets what GetFeature returns for report id (data
// starts with the report ID byte when the device numbers its reports).
func (d *Device) SetFeatureReport(id byte, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.features[id] = slices.Clone(data)
}

// OnOutput sets a hook run for each output report written; its error is
// the write's.
func (d *Device) OnOutput(f func(report []byte) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onOutput = f
}

// OnSetFeature sets a hook run for each feature report set; its error is
// the call's.
func (d *Device) OnSetFeature(f func(report []byte) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onFeature = f
}

// Outputs returns the output reports written so far.
func (d *Device) Outputs() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.outputs)
}

// SetFeatures returns the feature reports set so far.
func (d *Device) SetFeatures() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.setFeats)
}

// OpenHandles returns how many handles are open.
func (d *Device) OpenHandles() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.handles)
}

func (d *Device) open() (*handle, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		return nil, &hid.OpError{Op: "open", Node: d.node, Err: hid.ErrNoDevice}
	}
	h := &handle{d: d, kick: make(chan struct{}, 1)}
	if d.opened == 0 {
		h.queue, d.early = d.early, nil
	}
	d.opened++
	d.handles = append(d.handles, h)
	return h, nil
}

// handle is one open of a device.
type handle struct {
	d    *Device
	kick chan struct{}

	mu     sync.Mutex
	queue  [][]byte
	closed bool
}

var _ hid.Device = (*handle)(nil)

func (h *handle) push(r []byte) {
	h.mu.Lock()
	h.queue = appendBounded(h.queue, r)
	h.mu.Unlock()
	h.wake()
}

func (h *handle) wake() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// state returns the handle's error, if any: closed, or the device gone.
func (h *handle) state(op string) error {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return &hid.OpError{Op: op, Node: h.d.node, Err: hid.ErrClosed}
	}
	h.d.mu.Lock()
	gone := h.d.gone
	h.d.mu.Unlock()
	if gone {
		return &hid.OpError{Op: op, Node: h.d.node, Err: hid.ErrNoDevice}
	}
	return nil
}

func (h *handle) ReadInput(ctx context.Context, p []byte) (int, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return 0, &hid.OpError{Op: "read", Node: h.d.node, Err: hid.ErrClosed}
		}
		if len(h.queue) > 0 {
			r := h.queue[0]
			h.queue = h.queue[1:]
			h.mu.Unlock()
			return copy(p, r), nil
		}
		h.mu.Unlock()
		// The device's state before ctx: an unplug that happened before
		// the caller gave up is what the caller must hear about.
		if err := h.state("read"); err != nil {
			return 0, err
		}
		select {
		case <-h.kick:
		case <-ctx.Done():
			if err := h.state("read"); err != nil {
				return 0, err
			}
			return 0, ctx.Err()
		}
	}
}

func (h *handle) checkSize(op string, kind hid.ReportKind, report []byte) error {
	// hidraw refuses a report shorter than its ID byte and one byte of
	// data (EINVAL).
	if len(report) < 2 || len(report) > hid.MaxReportSize {
		return &hid.OpError{Op: op, Node: h.d.node, Err: hid.ErrReportSize}
	}
	desc := h.d.desc
	if desc == nil {
		return nil
	}
	id := byte(0)
	if desc.Numbered {
		id = report[0]
	}
	want := desc.Size(kind, id)
	if want == 0 {
		return &hid.OpError{Op: op, Node: h.d.node, Err: fmt.Errorf("%w: no %s report %d", hid.ErrReportSize, kind, id)}
	}
	// hidraw takes the report ID first, 0 for an unnumbered report.
	if !desc.Numbered {
		if report[0] != 0 {
			return &hid.OpError{Op: op, Node: h.d.node, Err: fmt.Errorf("%w: report ID %d on a device without numbered reports", hid.ErrReportSize, report[0])}
		}
		want++
	}
	if len(report) != want {
		return &hid.OpError{Op: op, Node: h.d.node, Err: fmt.Errorf("%w: %s report %d is %d bytes, not %d", hid.ErrReportSize, kind, id, want, len(report))}
	}
	return nil
}

func (h *handle) WriteOutput(report []byte) error {
	if err := h.state("write"); err != nil {
		return err
	}
	if err := h.checkSize("write", hid.Output, report); err != nil {
		return err
	}
	h.d.mu.Lock()
	h.d.outputs = append(h.d.outputs, slices.Clone(report))
	f := h.d.onOutput
	h.d.mu.Unlock()
	if f != nil {
		if err := f(slices.Clone(report)); err != nil {
			return &hid.OpError{Op: "write", Node: h.d.node, Err: err}
		}
	}
	return nil
}

func (h *handle) SetFeature(report []byte) error {
	if err := h.state("ioctl HIDIOCSFEATURE"); err != nil {
		return err
	}
	if err := h.checkSize("ioctl HIDIOCSFEATURE", hid.Feature, report); err != nil {
		return err
	}
	h.d.mu.Lock()
	h.d.setFeats = append(h.d.setFeats, slices.Clone(report))
	f := h.d.onFeature
	h.d.mu.Unlock()
	if f != nil {
		if err := f(slices.Clone(report)); err != nil {
			return &hid.OpError{Op: "ioctl HIDIOCSFEATURE", Node: h.d.node, Err: err}
		}
	}
	return nil
}

func (h *handle) GetFeature(id byte, p []byte) (int, error) {
	if err := h.state("ioctl HIDIOCGFEATURE"); err != nil {
		return 0, err
	}
	if len(p) < 2 {
		return 0, &hid.OpError{Op: "ioctl HIDIOCGFEATURE", Node: h.d.node, Err: hid.ErrReportSize}
	}
	h.d.mu.Lock()
	data, ok := h.d.features[id]
	h.d.mu.Unlock()
	if !ok {
		// The device stalls a request for a report it does not have.
		return 0, &hid.OpError{Op: "ioctl HIDIOCGFEATURE", Node: h.d.node, Err: fmt.Errorf("no feature report %d", id)}
	}
	return copy(p, data), nil
}

func (h *handle) Info() (hid.Info, error) {
	if err := h.state("ioctl HIDIOCGRAWINFO"); err != nil {
		return hid.Info{}, err
	}
	return h.d.spec.Info, nil
}

func (h *handle) ReportDescriptor() ([]byte, error) {
	if err := h.state("ioctl HIDIOCGRDESC"); err != nil {
		return nil, err
	}
	return slices.Clone(h.d.spec.Descriptor), nil
}

func (h *handle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return &hid.OpError{Op: "close", Node: h.d.node, Err: hid.ErrClosed}
	}
	h.closed = true
	h.mu.Unlock()
	h.d.mu.Lock()
	h.d.handles = slices.DeleteFunc(h.d.handles, func(x *handle) bool { return x == h })
	h.d.mu.Unlock()
	h.wake()
	return nil
}

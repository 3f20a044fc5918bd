package hidkbd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/drvkit/drvkit/driver"
	"github.com/drvkit/drvkit/driver/hid"
)

// Names and the nub properties the personality reads (hotplug/hidbus
// publishes HIDDevice nubs with these keys).
const (
	Name     = "hidkbd"
	Class    = "HIDKeyboard"
	NubClass = "HIDDevice"

	PropHidraw    = "hidraw"
	PropUsagePage = "primaryUsagePage"
	PropUsage     = "primaryUsage"
)

// Method names.
const (
	MethodRead = "read"
	MethodKeys = "keys"
	MethodLEDs = "leds"
)

// maxText bounds what "keys" remembers.
const maxText = 4096

// keepReports is how many input reports "read" can still hand out: a
// client reading one report after the other must not miss the ones that
// came while its previous reply travelled (a key's press and release
// arrive within milliseconds).
const keepReports = 64

// report is one input report as "read" returns it.
type report struct {
	seq     uint64
	data    []byte
	pressed []byte // key codes down after it
}

// Personality returns the hidkbd personality opening nodes through b (nil:
// the kernel's hidraw).
func Personality(b hid.Backend) driver.Personality {
	if b == nil {
		b = hid.Hidraw{}
	}
	return driver.Personality{
		Name: Name, Class: Class, ProviderClass: NubClass,
		Match: []driver.Match{
			driver.MatchValue(PropUsagePage, hid.UsagePageGenericDesktop),
			driver.MatchValue(PropUsage, hid.UsageKeyboard),
			driver.MatchFunc(hasNode),
		},
		New: func() driver.Driver { return &Driver{backend: b} },
	}
}

// Driver is one keyboard.
type Driver struct {
	backend hid.Backend

	mu      sync.Mutex
	dev     hid.Device
	desc    *hid.ReportDescriptor
	seq     uint64
	recent  []report // the last keepReports input reports, oldest first
	pressed []byte   // key codes down now
	text    strings.Builder
	events  int
	err     error         // why the reader ended
	changed chan struct{} // closed and replaced at every report and at the end
}

var (
	_ driver.Driver        = (*Driver)(nil)
	_ driver.ClientMethods = (*Driver)(nil)
)

// Start opens the nub's hidraw node and starts the reader.
func (d *Driver) Start(ctx context.Context, s *driver.Service) error {
	provs := s.Providers()
	if len(provs) == 0 {
		return errors.New("no provider nub")
	}
	node, _ := provs[0].Properties().String(PropHidraw)
	dev, err := d.backend.Open(node)
	if err != nil {
		return err
	}
	if err := s.Manage(dev); err != nil {
		return err
	}
	raw, err := dev.ReportDescriptor()
	if err != nil {
		return err
	}
	desc, err := hid.ParseReportDescriptor(raw)
	if err != nil {
		return err
	}
	if desc.MaxSize(hid.Input) == 0 {
		return fmt.Errorf("%s: the descriptor has no input report", node)
	}
	d.mu.Lock()
	d.dev, d.desc, d.changed = dev, desc, make(chan struct{})
	d.mu.Unlock()
	return s.Submit(driver.Job{Key: "reader", Run: d.reader})
}

// reader reads input reports until the device goes or the service stops.
func (d *Driver) reader(ctx context.Context) error {
	d.mu.Lock()
	dev, size := d.dev, d.desc.MaxSize(hid.Input)
	d.mu.Unlock()
	buf := make([]byte, size)
	for {
		n, err := dev.ReadInput(ctx, buf)
		if err != nil {
			d.mu.Lock()
			d.err = err
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
			if ctx.Err() != nil {
				return nil // stopped
			}
			return err
		}
		d.report(slices.Clone(buf[:n]))
	}
}

// report applies one input report.
func (d *Driver) report(r []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	body := r
	if d.desc.Numbered && len(body) > 0 {
		body = body[1:]
	}
	if len(body) >= 3 {
		mods, keys := body[0], body[2:]
		var now []byte
		for _, k := range keys {
			if k > 3 { // 0 none, 1-3 error codes (rollover)
				now = append(now, k)
			}
		}
		for _, k := range now {
			if !slices.Contains(d.pressed, k) {
				d.events++
				if d.text.Len() < maxText {
					if c, ok := charOf(k, mods&0x22 != 0); ok {
						d.text.WriteRune(c)
					}
				}
			}
		}
		for _, k := range d.pressed {
			if !slices.Contains(now, k) {
				d.events++
			}
		}
		d.pressed = now
	}
	if len(d.recent) == keepReports {
		d.recent = slices.Delete(d.recent, 0, 1)
	}
	d.recent = append(d.recent, report{seq: d.seq, data: r, pressed: slices.Clone(d.pressed)})
	close(d.changed)
	d.changed = make(chan struct{})
}

// charOf is the character of a boot keyboard usage on a US layout.
func charOf(code byte, shift bool) (rune, bool) {
	switch {
	case code >= 0x04 && code <= 0x1d:
		c := rune('a' + code - 0x04)
		if shift {
			c -= 'a' - 'A'
		}
		return c, true
	case code >= 0x1e && code <= 0x26:
		return rune('1' + code - 0x1e), true
	case code == 0x27:
		return '0', true
	case code >= 0x28 && code <= 0x31:
		return rune("\n\x1b\b\t -=[]\\"[code-0x28]), true
	case code >= 0x33 && code <= 0x38:
		return rune(";'`,./"[code-0x33]), true
	}
	return 0, false
}

// Stop forgets the device; its job is already drained and the node is
// closed after (managed).
func (d *Driver) Stop(s *driver.Service) {
	d.mu.Lock()
	d.dev = nil
	d.mu.Unlock()
}

// ReadReply is the reply of "read".
type ReadReply struct {
	Seq     uint64 `json:"seq"`
	Report  string `json:"report"`
	Pressed []int  `json:"pressed"`
}

// KeysReply is the reply of "keys".
type KeysReply struct {
	Text   string `json:"text"`
	Events int    `json:"events"`
}

// Methods implements driver.ClientMethods.
func (d *Driver) Methods() map[string]driver.Method {
	return map[string]driver.Method{
		MethodRead: d.read,
		MethodKeys: func(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
			d.mu.Lock()
			defer d.mu.Unlock()
			return json.Marshal(KeysReply{Text: d.text.String(), Events: d.events})
		},
		MethodLEDs: d.leds,
	}
}

func (d *Driver) read(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
	var a struct {
		After uint64 `json:"after"`
	}
	if len(in) > 0 {
		if err := json.Unmarshal(in, &a); err != nil {
			return nil, &driver.OpError{Op: MethodRead, Err: fmt.Errorf("bad arguments: %w", err)}
		}
	}
	for {
		d.mu.Lock()
		err, changed, dev := d.err, d.changed, d.dev
		i := slices.IndexFunc(d.recent, func(r report) bool { return r.seq > a.After })
		var next report
		if i >= 0 {
			next = d.recent[i] // never modified once appended
		}
		d.mu.Unlock()
		if i >= 0 {
			p := make([]int, len(next.pressed))
			for i, k := range next.pressed {
				p[i] = int(k)
			}
			return json.Marshal(ReadReply{Seq: next.seq, Report: hex.EncodeToString(next.data), Pressed: p})
		}
		if err != nil {
			return nil, err
		}
		if changed == nil || dev == nil {
			return nil, &driver.OpError{Op: MethodRead, Err: driver.ErrNotActive}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			// Cancelled because the device went (the service is being
			// terminated for its unplug)? Then that is the answer.
			if _, err := dev.Info(); errors.Is(err, hid.ErrNoDevice) {
				return nil, err
			}
			return nil, ctx.Err()
		}
	}
}

func (d *Driver) leds(ctx context.Context, s *driver.Service, in []byte) ([]byte, error) {
	var a struct {
		LEDs uint8 `json:"leds"`
	}
	if err := json.Unmarshal(in, &a); err != nil {
		return nil, &driver.OpError{Op: MethodLEDs, Err: fmt.Errorf("bad arguments: %w", err)}
	}
	d.mu.Lock()
	dev, desc := d.dev, d.desc
	d.mu.Unlock()
	if dev == nil {
		return nil, &driver.OpError{Op: MethodLEDs, Err: driver.ErrNotActive}
	}
	// hidraw takes the report ID first: 0 when reports are not numbered
	// (a bare LED byte would be refused with EINVAL).
	report := []byte{0, a.LEDs}
	if desc.Numbered { // the first output report's ID
		for _, r := range desc.Reports {
			if r.Kind == hid.Output {
				report = []byte{r.ID, a.LEDs}
				break
			}
		}
	}
	if err := dev.WriteOutput(report); err != nil {
		return nil, err
	}
	return []byte("{}"), nil
}

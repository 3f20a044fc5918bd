package agentproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Operations understood by the agent.
const (
	OpHello     = "hello"      // → Hello
	OpSubscribe = "subscribe"  // stream uevents (the ones buffered since boot first)
	OpExec      = "exec"       // ExecArgs → ExecResult
	OpStart     = "start"      // StartArgs → StartResult: a background process
	OpSignal    = "signal"     // SignalArgs → nothing
	OpWait      = "wait"       // WaitArgs → ExecResult
	OpUSBList   = "usb.list"   // → []USBDevice, through gousb (libusb)
	OpSGList    = "sg.list"    // → []SGDevice, from sysfs
	OpInquiry   = "sg.inquiry" // InquiryArgs → Inquiry, through SG_IO
	OpBOT       = "usb.bot"    // BOTArgs → BOTResult: the user-space bulk-only driver
	OpGadgetUp  = "gadget.up"  // GadgetArgs → GadgetResult
	OpGadgetOff = "gadget.off" // GadgetArgs (Name) → nothing: unbind and remove
	OpPoweroff  = "poweroff"
	OpUevent    = "uevent.wait" // UeventWaitArgs → Uevent: the first match since boot
)

// EventBOTReading is sent once an OpBOT with ReadUntilError is reading.
const EventBOTReading = "usb.bot.reading"

// MaxLine bounds one message on the channel.
const MaxLine = 4 << 20

// ErrMalformed reports a line that is not a valid message.
var ErrMalformed = errors.New("agentproto: malformed message")

// Request is sent by the host.
type Request struct {
	ID   uint64          `json:"id"`
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response answers the request with the same ID.
type Response struct {
	ID     uint64          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	Ms     float64         `json:"ms"` // time the guest spent on it
}

// Event is sent by the guest unprompted.
type Event struct {
	Event  string          `json:"event"` // "uevent"
	Uevent *Uevent         `json:"uevent,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// Message is one guest-to-host line: exactly one of Response and Event is set.
type Message struct {
	Response *Response
	Event    *Event
}

// DecodeMessage parses one guest-to-host line.
func DecodeMessage(line []byte) (Message, error) {
	line = bytes.TrimSpace(line)
	var probe struct {
		ID    *uint64 `json:"id"`
		Event *string `json:"event"`
	}
	if len(line) == 0 || line[0] != '{' {
		return Message{}, fmt.Errorf("%w: not a JSON object: %.80q", ErrMalformed, line)
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case probe.ID != nil && probe.Event == nil:
		var r Response
		if err := json.Unmarshal(line, &r); err != nil {
			return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if !r.OK && r.Error == "" {
			return Message{}, fmt.Errorf("%w: failed response %d without an error", ErrMalformed, r.ID)
		}
		return Message{Response: &r}, nil
	case probe.Event != nil && probe.ID == nil:
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if e.Event == "" {
			return Message{}, fmt.Errorf("%w: event without a name", ErrMalformed)
		}
		if e.Event == "uevent" && e.Uevent == nil {
			return Message{}, fmt.Errorf("%w: uevent event without a uevent", ErrMalformed)
		}
		return Message{Event: &e}, nil
	default:
		return Message{}, fmt.Errorf("%w: neither a response nor an event: %.80q", ErrMalformed, line)
	}
}

// DecodeRequest parses one host-to-guest line.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return r, fmt.Errorf("%w: not a JSON object: %.80q", ErrMalformed, line)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if r.Op == "" {
		return r, fmt.Errorf("%w: request %d without op", ErrMalformed, r.ID)
	}
	return r, nil
}

// Hello describes the guest once it is up.
type Hello struct {
	Kernel  string       `json:"kernel"`
	UptimeS float64      `json:"uptime_s"`
	Modules []ModuleLoad `json:"modules"`
}

// ModuleLoad is one module the agent loaded at boot.
type ModuleLoad struct {
	Path   string  `json:"path"`
	Params string  `json:"params,omitempty"`
	Ms     float64 `json:"ms"`
	Error  string  `json:"error,omitempty"`
}

// ExecArgs runs a program to completion.
type ExecArgs struct {
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"` // added to the agent's
	Stdin     string   `json:"stdin,omitempty"`
	TimeoutMs int      `json:"timeout_ms,omitempty"` // default 30 s
}

// ExecResult is a finished program. Exit is -1 when it was killed by a signal
// (Signal names it) or could not start (the response fails then).
type ExecResult struct {
	Exit     int     `json:"exit"`
	Signal   string  `json:"signal,omitempty"`
	Stdout   string  `json:"stdout"`
	Stderr   string  `json:"stderr"`
	Ms       float64 `json:"ms"`
	TimedOut bool    `json:"timed_out,omitempty"`
}

// StartArgs starts a named background process (e.g. "drvctl serve").
type StartArgs struct {
	Name string   `json:"name"`
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
}

// StartResult is a started process.
type StartResult struct {
	Pid int `json:"pid"`
}

// SignalArgs sends a signal (its number) to a named background process.
type SignalArgs struct {
	Name   string `json:"name"`
	Signal int    `json:"signal"`
}

// WaitArgs waits for a named background process to exit.
type WaitArgs struct {
	Name      string `json:"name"`
	TimeoutMs int    `json:"timeout_ms,omitempty"` // default 30 s
}

// USBDevice is one device libusb enumerated.
type USBDevice struct {
	Bus          int    `json:"bus"`
	Address      int    `json:"address"`
	Port         int    `json:"port"`
	VID          string `json:"vid"` // "46f4"
	PID          string `json:"pid"`
	Class        string `json:"class"`
	Speed        string `json:"speed"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
	Serial       string `json:"serial,omitempty"`
	OpenError    string `json:"open_error,omitempty"`
}

// ID returns "vid:pid".
func (d USBDevice) ID() string { return d.VID + ":" + d.PID }

// SGDevice is one SCSI generic node and the device behind it.
type SGDevice struct {
	Dev    string `json:"dev"`    // /dev/sg0
	HCTL   string `json:"hctl"`   // 0:0:0:0
	Vendor string `json:"vendor"` // sysfs, trimmed
	Model  string `json:"model"`
	Type   int    `json:"type"`
	SysDev string `json:"sysdev"` // resolved sysfs path of the SCSI device
}

// IsUSB reports whether the SCSI device sits on a USB transport.
func (d SGDevice) IsUSB() bool { return strings.Contains(d.SysDev, "/usb") }

// InquiryArgs names the sg node to ask.
type InquiryArgs struct {
	Device string `json:"device"`
}

// Inquiry is the standard INQUIRY data.
type Inquiry struct {
	Device         string  `json:"device"`
	PeripheralType int     `json:"peripheral_type"`
	Vendor         string  `json:"vendor"`
	Product        string  `json:"product"`
	Revision       string  `json:"revision"`
	Ms             float64 `json:"ms"`
}

// UeventWaitArgs waits in the guest for a uevent, searching from boot on,
// so a script can wait for hardware without racing it.
type UeventWaitArgs struct {
	Match     Match `json:"match"`
	TimeoutMs int   `json:"timeout_ms,omitempty"` // default 30 s
}

// BOTArgs selects a USB mass-storage device for the user-space bulk-only
// check; WriteLBA ≥ 0 also writes Pattern there and reads it back.
type BOTArgs struct {
	Selector  string `json:"selector"` // "46f4:0001[:SERIAL]" or "BUS/ADDR"
	WriteLBA  int64  `json:"write_lba"`
	Pattern   string `json:"pattern,omitempty"`
	TimeoutMs int    `json:"timeout_ms,omitempty"`
	// ReadUntilError then reads block 0 over and over until a read fails
	// (the host unplugs the stick meanwhile) or the timeout ends.
	ReadUntilError bool `json:"read_until_error,omitempty"`
}

// BOTResult is what the user-space driver saw.
type BOTResult struct {
	Device        string   `json:"device"`
	Detached      []string `json:"detached"` // kernel drivers detached for it: "usb-storage@0"
	Inquiry       Inquiry  `json:"inquiry"`
	BlockSize     int      `json:"block_size"`
	Blocks        uint64   `json:"blocks"`
	RoundTrip     bool     `json:"round_trip"`           // the written block read back equal
	StillDetached int      `json:"still_detached"`       // after close: must be 0
	Reads         int      `json:"reads,omitempty"`      // ReadUntilError: reads that succeeded
	ReadError     string   `json:"read_error,omitempty"` // …and the error that ended them
	NoDevice      bool     `json:"no_device,omitempty"`  // that error matches ErrNoDevice
	Ms            float64  `json:"ms"`
}

// GadgetArgs describes a configfs mass-storage gadget on dummy_hcd.
type GadgetArgs struct {
	Name         string `json:"name"`
	VID          uint16 `json:"vid,omitempty"`
	PID          uint16 `json:"pid,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
	Serial       string `json:"serial,omitempty"`
	SizeMiB      int    `json:"size_mib,omitempty"` // backing file, default 4
}

// GadgetResult names the UDC the gadget was bound to.
type GadgetResult struct {
	UDC string `json:"udc"`
}

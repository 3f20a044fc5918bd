package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The protocol version. Peers of the same major version understand each
// other (a minor version only adds optional fields or message types that
// the other side may ignore); a different major is refused at the hello.
const (
	Major   = 1
	Minor   = 3
	Version = "1.3"
)

const (
	// MaxMessage is the largest message either side sends or accepts,
	// in bytes of JSON. It fits in the default socket buffer (a
	// SOCK_SEQPACKET message must fit whole).
	MaxMessage = 128 << 10
	// MaxData is the most bytes of data a call, result, message or notify
	// carries: what base64 leaves of MaxMessage, with room for the rest.
	MaxData = 64 << 10
	// MaxFiles is the most descriptors one message carries.
	MaxFiles = 16
	// MaxProviders is the most providers of the nub a start message
	// carries (1.2): deeper ones are left out.
	MaxProviders = 8
	// FDEnv names the environment variable that holds the descriptor
	// number of the driver's end of the socket (always 3).
	FDEnv = "DRVKIT_SOCKET_FD"
)

// The message types.
const (
	// Both directions.
	TypeHello  = "hello"  // version handshake: the daemon first, the driver answers
	TypeResult = "result" // the answer to a request (id)
	TypeError  = "error"  // a request failed (id), or the sender gives up (no id)
	TypeCancel = "cancel" // daemon: stop the call or start id; driver: never

	// Daemon to driver.
	TypeStart         = "start"          // request: run the driver on this nub, with these descriptors
	TypeWillTerminate = "will_terminate" // notice: the instance is terminating (phase 2, root to leaf)
	TypeDidTerminate  = "did_terminate"  // request: no client has the instance open any more
	TypeStop          = "stop"           // request: stop and release everything; then exit
	TypeCall          = "call"           // request: a client method call
	TypeMessage       = "message"        // notice: a message from the nub (ServiceIsTerminated, …)
	TypeChannel       = "channel"        // 1.3 request: serve an application's calls on this connection (one descriptor)
	TypeChannelClose  = "channel_close"  // 1.3 notice: close that channel (the application closed its handle, or died)

	// Driver to daemon.
	TypeNotify    = "notify"    // send a notification to the instance's clients or interest listeners
	TypeLog       = "log"       // a log line for the daemon's log
	TypeTerminate = "terminate" // the instance terminates itself (the driver gave up)
	TypeLeaks     = "leaks"     // 1.1, optional: what the driver's own code left alive at stop
)

// Where a notify goes.
const (
	ToClients  = "clients"  // driver.Service.MessageClients: every client's message handler
	ToInterest = "interest" // driver.Service.Notify: the instance's interest listeners
)

// Message type numbers of TypeMessage and TypeNotify (driver.MessageType).
const (
	MsgServiceIsTerminated      = 1
	MsgServiceIsRequestingClose = 2
	MsgServiceWasClosed         = 3
	MsgServiceIsAttemptingOpen  = 4
	// MsgDriverDefined is the first number free for drivers; a notify
	// must use one at or above it.
	MsgDriverDefined = 0x10000
)

// Error codes.
const (
	CodeVersion   = "version"   // the peer speaks another major version
	CodeProtocol  = "protocol"  // a malformed or unexpected message
	CodeNoMethod  = "no_method" // the driver offers no such method
	CodeNoDevice  = "no_device" // the device is gone
	CodeTooLarge  = "too_large" // input or output over a limit
	CodeCancelled = "cancelled" // the request was cancelled
	CodeFailed    = "failed"    // anything else: Text says what
)

// Message is one protocol message; which fields are set depends on Type
// (see PROTOCOL.md). Unknown fields are ignored, so that a newer minor
// version can add some.
type Message struct {
	Type string `json:"type"`
	ID   uint64 `json:"id,omitempty"`

	// hello
	Version    string `json:"version,omitempty"`
	MaxMessage int    `json:"max_message,omitempty"`
	// hello (daemon, 1.1): the daemon asks for a leaks report at stop
	// (a Go SDK driver traces its references to name the retaining line)
	Trace bool `json:"trace,omitempty"`
	// hello (daemon), start
	Driver string `json:"driver,omitempty"`
	PID    int    `json:"pid,omitempty"` // hello (driver): its process id
	// hello (driver, 1.3): the driver serves direct call channels
	Direct bool `json:"direct,omitempty"`

	// channel, channel_close (1.3): the channel's number, chosen by the
	// daemon
	Channel uint64 `json:"channel,omitempty"`
	// channel: the application's user-client service, the frame and
	// in-flight limits of the user-client protocol, and the methods it
	// may call with their limits (the manifest's)
	Client      uint64          `json:"client,omitempty"`
	MaxFrame    int             `json:"max_frame,omitempty"`
	MaxInflight int             `json:"max_inflight,omitempty"`
	Methods     []ChannelMethod `json:"methods,omitempty"`

	// start
	Personality *Personality `json:"personality,omitempty"`
	Nub         *Nub         `json:"nub,omitempty"`
	Files       []File       `json:"files,omitempty"`
	// start (1.2): the nub's providers, nearest first (each one's first
	// provider, up to the registry's root, which is left out): the
	// properties a driver reads above its nub — a USB interface's bus and
	// device numbers are on the USB device. A 1.1 daemon sends none.
	Providers []Nub `json:"providers,omitempty"`

	// call
	Method string `json:"method,omitempty"`
	// call, result, message, notify
	Data []byte `json:"data,omitempty"`
	// message, notify: the driver.MessageType number
	Msg  uint32 `json:"msg,omitempty"`
	From uint64 `json:"from,omitempty"` // message: the sender's service id
	To   string `json:"to,omitempty"`   // notify: ToClients or ToInterest

	// message, will_terminate, did_terminate, stop, terminate: why (the
	// texts of driver.Cause: "unplug", "unload", "provider", …)
	Cause     string `json:"cause,omitempty"`
	RootCause string `json:"root_cause,omitempty"`

	// error
	Code string `json:"code,omitempty"`
	// error, log: what happened; log: the line
	Text string `json:"text,omitempty"`
	// log: "debug", "info", "warn", "error" ("": info)
	Level string `json:"level,omitempty"`

	// leaks (1.1): what outlived the driver's instance in its process
	Leaks *Leaks `json:"leaks,omitempty"`
}

// Leaks is a driver process's report of what its own code left alive once
// its instance was stopped and freed: the count of objects, a readable
// report, and the culprit — the first frame outside the SDK of the
// blamed reference, with its stack — when the driver traced its
// references (the daemon's hello asked for it).
type Leaks struct {
	Objects int     `json:"objects"`
	Text    string  `json:"text,omitempty"`
	Culprit *Frame  `json:"culprit,omitempty"`
	Stack   []Frame `json:"stack,omitempty"`
}

// Frame is one stack frame of a leaks report.
type Frame struct {
	Func string `json:"func"`
	File string `json:"file,omitempty"`
	Line int    `json:"line,omitempty"`
}

// Limits of a leaks report: its text, and its stack's frames.
const (
	MaxLeaksText   = 32 << 10
	MaxLeaksFrames = 64
)

// ChannelMethod is a method a channel's application may call, with the
// manifest's limits on its input and output (0: none beyond the frame).
type ChannelMethod struct {
	Name      string `json:"name"`
	MaxInput  int    `json:"max_input,omitempty"`
	MaxOutput int    `json:"max_output,omitempty"`
}

// MaxChannelMethods bounds a channel message's methods.
const MaxChannelMethods = 256

// Personality says which of the bundle's personalities matched.
type Personality struct {
	Name          string `json:"name"`  // the manifest's label
	Class         string `json:"class"` // the instance's class
	ProviderClass string `json:"provider_class"`
}

// Nub is the service the driver instance was matched to, as the daemon
// sees it: the driver process mirrors it.
type Nub struct {
	ID    uint64 `json:"id"`
	Class string `json:"class"`
	Name  string `json:"name"`
	// Properties are the nub's properties as JSON values (integers as
	// numbers, byte strings as base64), and Types their Go types ("int",
	// "uint16", "string", "bool", "bytes", "float64", …) so that a Go
	// driver gets the very values an in-process one gets.
	Properties map[string]json.RawMessage `json:"properties,omitempty"`
	Types      map[string]string          `json:"types,omitempty"`
}

func (n *Nub) check() error {
	for k := range n.Properties {
		if len(k) > maxText {
			return malformed("property name of %d bytes", len(k))
		}
	}
	for k := range n.Types {
		if _, ok := n.Properties[k]; !ok {
			return malformed("type of property %q that is not there", clip(k))
		}
	}
	return nil
}

// File describes one descriptor of a start message, in the order of the
// SCM_RIGHTS array.
type File struct {
	Resource string `json:"resource"` // the drivertable resource it backs: "hidraw", "sg", "usb"
	Node     string `json:"node"`     // the device node it is (/dev/hidraw0)
	Kind     string `json:"kind"`     // how to use it: "hidraw", "sg", "usbfs", "sim-hid", …
}

var (
	// ErrMalformed: a message is not one this version of the protocol
	// defines.
	ErrMalformed = errors.New("malformed message")
	// ErrTooLarge: a message over MaxMessage, or data over MaxData.
	ErrTooLarge = errors.New("message too large")
	// ErrVersion: the peer speaks another major version.
	ErrVersion = errors.New("protocol version mismatch")
)

// Encode returns m's JSON, refusing what Decode would refuse.
func Encode(m *Message, nfds int) ([]byte, error) {
	if err := m.check(nfds); err != nil {
		return nil, err
	}
	if b := encodeFast(m); b != nil {
		return b, nil // a call's data is at most MaxData: it fits
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrTooLarge, m.Type, len(b), MaxMessage)
	}
	return b, nil
}

// Decode parses one message that arrived with nfds descriptors and checks
// it (see Message): the error says what is wrong.
func Decode(b []byte, nfds int) (*Message, error) {
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(b), MaxMessage)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	m, ok := decodeFast(b)
	if !ok {
		m = new(Message)
		if err := json.Unmarshal(b, m); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	if err := m.check(nfds); err != nil {
		return nil, err
	}
	return m, nil
}

// requests are the types answered by result or error.
var requests = map[string]bool{TypeStart: true, TypeDidTerminate: true, TypeStop: true, TypeCall: true, TypeChannel: true}

// IsRequest reports whether a message of type t is answered.
func IsRequest(t string) bool { return requests[t] }

var known = map[string]bool{
	TypeHello: true, TypeResult: true, TypeError: true, TypeCancel: true,
	TypeStart: true, TypeWillTerminate: true, TypeDidTerminate: true, TypeStop: true, TypeCall: true, TypeMessage: true,
	TypeNotify: true, TypeLog: true, TypeTerminate: true, TypeLeaks: true,
	TypeChannel: true, TypeChannelClose: true,
}

// FromDaemon reports whether the daemon sends messages of type t.
func FromDaemon(t string) bool {
	switch t {
	case TypeHello, TypeResult, TypeError, TypeCancel, TypeStart, TypeWillTerminate, TypeDidTerminate, TypeStop, TypeCall, TypeMessage,
		TypeChannel, TypeChannelClose:
		return true
	}
	return false
}

// FromDriver reports whether a driver process sends messages of type t.
func FromDriver(t string) bool {
	switch t {
	case TypeHello, TypeResult, TypeError, TypeNotify, TypeLog, TypeTerminate, TypeLeaks:
		return true
	}
	return false
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// maxText bounds texts: names, log lines, error messages.
const maxText = 4096

func (m *Message) check(nfds int) error {
	if !known[m.Type] {
		if m.Type == "" {
			return malformed("no type")
		}
		return malformed("unknown type %q", clip(m.Type))
	}
	if nfds < 0 || nfds > MaxFiles {
		return malformed("%d descriptors (at most %d)", nfds, MaxFiles)
	}
	if m.Type != TypeStart && len(m.Files) > 0 {
		return malformed("%s lists files", m.Type)
	}
	if m.Type != TypeStart && m.Type != TypeChannel && nfds > 0 {
		return malformed("%s carries descriptors", m.Type)
	}
	if len(m.Data) > MaxData {
		return fmt.Errorf("%w: %s data of %d bytes (at most %d)", ErrTooLarge, m.Type, len(m.Data), MaxData)
	}
	for _, s := range []string{m.Version, m.Driver, m.Method, m.To, m.Cause, m.RootCause, m.Code, m.Text, m.Level} {
		if len(s) > maxText {
			return malformed("%s has a text of %d bytes (at most %d)", m.Type, len(s), maxText)
		}
	}
	if IsRequest(m.Type) || m.Type == TypeResult || m.Type == TypeCancel {
		if m.ID == 0 {
			return malformed("%s without an id", m.Type)
		}
	}
	switch m.Type {
	case TypeHello:
		if _, _, err := ParseVersion(m.Version); err != nil {
			return err
		}
		if m.MaxMessage < 0 || m.PID < 0 {
			return malformed("hello with a negative number")
		}
	case TypeStart:
		if m.Nub == nil || m.Personality == nil {
			return malformed("start without nub or personality")
		}
		if m.Nub.Class == "" || m.Personality.Class == "" {
			return malformed("start without the nub's or the instance's class")
		}
		if len(m.Files) != nfds {
			return malformed("start lists %d files but carries %d descriptors", len(m.Files), nfds)
		}
		if err := m.Nub.check(); err != nil {
			return err
		}
		if len(m.Providers) > MaxProviders {
			return malformed("start with %d providers (at most %d)", len(m.Providers), MaxProviders)
		}
		for i := range m.Providers {
			if m.Providers[i].Class == "" {
				return malformed("start with a provider without a class")
			}
			if err := m.Providers[i].check(); err != nil {
				return err
			}
		}
	case TypeCall:
		if m.Method == "" {
			return malformed("call without a method")
		}
	case TypeChannel:
		if m.Channel == 0 || nfds != 1 {
			return malformed("channel %d with %d descriptors (want a number and one)", m.Channel, nfds)
		}
		if m.MaxFrame < 0 || m.MaxInflight < 0 || len(m.Methods) > MaxChannelMethods {
			return malformed("channel with a negative limit or %d methods", len(m.Methods))
		}
		for _, mt := range m.Methods {
			if mt.Name == "" || len(mt.Name) > maxText || mt.MaxInput < 0 || mt.MaxOutput < 0 {
				return malformed("channel method %q", clip(mt.Name))
			}
		}
	case TypeChannelClose:
		if m.Channel == 0 {
			return malformed("channel_close without a channel")
		}
	case TypeMessage:
		if m.Msg == 0 {
			return malformed("message without msg")
		}
	case TypeNotify:
		if m.To != ToClients && m.To != ToInterest {
			return malformed("notify to %q (want %q or %q)", clip(m.To), ToClients, ToInterest)
		}
		if m.Msg < MsgDriverDefined {
			return malformed("notify of message %d: drivers may send only their own types (from %#x)", m.Msg, MsgDriverDefined)
		}
	case TypeLog:
		switch m.Level {
		case "", "debug", "info", "warn", "error":
		default:
			return malformed("log level %q", clip(m.Level))
		}
	case TypeError:
		if m.Code == "" {
			return malformed("error without a code")
		}
	case TypeLeaks:
		if err := m.Leaks.check(); err != nil {
			return err
		}
	}
	if m.Leaks != nil && m.Type != TypeLeaks {
		return malformed("%s carries a leaks report", m.Type)
	}
	return nil
}

func (l *Leaks) check() error {
	if l == nil {
		return malformed("leaks without a report")
	}
	if l.Objects < 1 {
		return malformed("leaks report of %d objects", l.Objects)
	}
	if len(l.Text) > MaxLeaksText {
		return malformed("leaks report text of %d bytes (at most %d)", len(l.Text), MaxLeaksText)
	}
	if len(l.Stack) > MaxLeaksFrames {
		return malformed("leaks report stack of %d frames (at most %d)", len(l.Stack), MaxLeaksFrames)
	}
	frames := l.Stack
	if l.Culprit != nil {
		frames = append([]Frame{*l.Culprit}, frames...)
	}
	for _, f := range frames {
		if f.Func == "" || len(f.Func) > maxText || len(f.File) > maxText || f.Line < 0 {
			return malformed("leaks report frame %q %q:%d", clip(f.Func), clip(f.File), f.Line)
		}
	}
	return nil
}

// ParseVersion reads "MAJOR.MINOR".
func ParseVersion(v string) (major, minor int, err error) {
	a, b, ok := strings.Cut(v, ".")
	if ok {
		major, err = strconv.Atoi(a)
		if err == nil {
			minor, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || major < 0 || minor < 0 {
		return 0, 0, malformed("version %q is not MAJOR.MINOR", clip(v))
	}
	return major, minor, nil
}

// CheckVersion refuses a peer's version whose major is not Major.
func CheckVersion(v string) error {
	major, _, err := ParseVersion(v)
	if err != nil {
		return err
	}
	if major != Major {
		return fmt.Errorf("%w: the peer speaks %s, this side %s", ErrVersion, v, Version)
	}
	return nil
}

// clip shortens an untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Errorf is an error message answering request id (0: the sender gives
// up on the connection).
func Errorf(id uint64, code, format string, args ...any) *Message {
	return &Message{Type: TypeError, ID: id, Code: code, Text: clipText(fmt.Sprintf(format, args...))}
}

func clipText(s string) string {
	if len(s) > maxText {
		return s[:maxText-3] + "…"
	}
	return s
}

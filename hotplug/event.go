package hotplug

import (
	"iter"
	"strconv"
	"strings"
)

// Action is what happened to a device (the kernel's kobject_action).
type Action uint8

// The kernel's actions, in its own order (lib/kobject_uevent.c).
const (
	ActionAdd Action = iota + 1
	ActionRemove
	ActionChange
	ActionMove
	ActionOnline
	ActionOffline
	ActionBind
	ActionUnbind
)

var actionNames = [...]string{"", "add", "remove", "change", "move", "online", "offline", "bind", "unbind"}

func (a Action) String() string {
	if int(a) < len(actionNames) && a != 0 {
		return actionNames[a]
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// ParseAction returns the Action named s.
func ParseAction(s string) (Action, bool) {
	// A switch keeps this allocation-free and faster than a map.
	switch s {
	case "add":
		return ActionAdd, true
	case "remove":
		return ActionRemove, true
	case "change":
		return ActionChange, true
	case "move":
		return ActionMove, true
	case "online":
		return ActionOnline, true
	case "offline":
		return ActionOffline, true
	case "bind":
		return ActionBind, true
	case "unbind":
		return ActionUnbind, true
	}
	return 0, false
}

// Origin says which producer made an event.
type Origin uint8

const (
	OriginKernel    Origin = iota // received from the kernel over netlink
	OriginColdplug                // synthesized from a sysfs walk at start
	OriginResync                  // synthesized by the resync after an overflow
	OriginSimulated               // produced by the scenario simulator
)

func (o Origin) String() string {
	switch o {
	case OriginKernel:
		return "kernel"
	case OriginColdplug:
		return "coldplug"
	case OriginResync:
		return "resync"
	case OriginSimulated:
		return "simulated"
	}
	return "origin(" + strconv.Itoa(int(o)) + ")"
}

// Event is one uevent. The string fields are substrings of one backing
// string holding the whole datagram, so an Event costs one allocation.
// Events are values: copy them freely.
type Event struct {
	Action    Action
	DevPath   string // without the /sys prefix, e.g. /devices/pci0000:00/.../2-1
	Subsystem string
	DevType   string // "" when the kernel sends none
	Driver    string // "" when unbound or not reported
	Seqnum    uint64 // 0 for synthesized events
	Origin    Origin
	// Label is the refcount attribution label of the work that produced
	// the event (refcount.WithLabel on the context given to sim.Sim.Inject);
	// the Bridge creates the event's nubs, and matching its drivers, under
	// it, so that a shared test fixture's objects are attributed to the
	// test that asked for them (refcount/leaktest). Never set from a
	// uevent.
	Label string

	env string // NUL-separated KEY=VALUE fields, as sent by the kernel
}

// Get returns the value of the environment variable key, or "".
func (e *Event) Get(key string) string {
	v, _ := e.Lookup(key)
	return v
}

// Lookup returns the value of the environment variable key.
func (e *Event) Lookup(key string) (string, bool) {
	s := e.env
	for len(s) > 0 {
		var f string
		if i := strings.IndexByte(s, 0); i >= 0 {
			f, s = s[:i], s[i+1:]
		} else {
			f, s = s, ""
		}
		if len(f) > len(key) && f[len(key)] == '=' && f[:len(key)] == key {
			return f[len(key)+1:], true
		}
	}
	return "", false
}

// Env yields every KEY, VALUE pair of the environment in the kernel's order
// (ACTION, DEVPATH and SUBSYSTEM first, SEQNUM last for kernel events).
func (e *Event) Env() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		s := e.env
		for len(s) > 0 {
			var f string
			if i := strings.IndexByte(s, 0); i >= 0 {
				f, s = s[:i], s[i+1:]
			} else {
				f, s = s, ""
			}
			if f == "" {
				continue
			}
			k, v, _ := strings.Cut(f, "=")
			if !yield(k, v) {
				return
			}
		}
	}
}

// Name returns the last element of the device path (the kernel's sysname),
// e.g. "2-1", "2-1:1.0", "1:0:0:0", "sg1", "sdb".
func (e *Event) Name() string {
	return e.DevPath[strings.LastIndexByte(e.DevPath, '/')+1:]
}

// String formats the event the way `udevadm monitor --kernel` does.
func (e Event) String() string {
	return e.Action.String() + " " + e.DevPath + " (" + e.Subsystem + ")"
}

// AppendBinary appends the event in the kernel's wire format:
// "ACTION@DEVPATH\0" followed by NUL-terminated KEY=VALUE fields.
func (e *Event) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, e.Action.String()...)
	b = append(b, '@')
	b = append(b, e.DevPath...)
	b = append(b, 0)
	if e.env != "" {
		b = append(b, e.env...)
		b = append(b, 0)
	}
	return b, nil
}

// MarshalBinary returns the event in the kernel's wire format.
func (e *Event) MarshalBinary() ([]byte, error) { return e.AppendBinary(nil) }

// UnmarshalBinary parses b (see Parse) into e.
func (e *Event) UnmarshalBinary(b []byte) error {
	ev, err := Parse(b)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// NewEvent builds an event with the kernel's field order: ACTION, DEVPATH,
// SUBSYSTEM, then env (KEY=VALUE strings, in order), then SEQNUM if seqnum is
// not 0. DEVTYPE and DRIVER are taken from env. It returns a *ParseError
// for anything the kernel could not have sent.
func NewEvent(action Action, devpath, subsystem string, seqnum uint64, env ...string) (Event, error) {
	var b strings.Builder
	n := len(devpath)*2 + len(subsystem) + 64
	for _, kv := range env {
		n += len(kv) + 1
	}
	b.Grow(n)
	b.WriteString(action.String())
	b.WriteByte('@')
	b.WriteString(devpath)
	b.WriteByte(0)
	b.WriteString("ACTION=")
	b.WriteString(action.String())
	b.WriteString("\x00DEVPATH=")
	b.WriteString(devpath)
	b.WriteString("\x00SUBSYSTEM=")
	b.WriteString(subsystem)
	b.WriteByte(0)
	for _, kv := range env {
		b.WriteString(kv)
		b.WriteByte(0)
	}
	if seqnum != 0 {
		b.WriteString("SEQNUM=")
		b.WriteString(strconv.FormatUint(seqnum, 10))
		b.WriteByte(0)
	}
	return ParseString(b.String())
}

// Parse decodes one kernel uevent datagram. It allocates once (the string
// all fields point into) and never panics; a datagram the kernel could not
// have sent gives a *ParseError.
func Parse(b []byte) (Event, error) {
	if len(b) == 0 {
		return Event{}, &ParseError{Offset: 0, Reason: "empty datagram"}
	}
	if len(b) >= 8 && string(b[:8]) == "libudev\x00" {
		// udevd's re-broadcast format (group 2); checked before the copy.
		return Event{}, &ParseError{Offset: 0, Reason: "libudev monitor message, not a kernel uevent"}
	}
	return ParseString(string(b))
}

// ParseString is Parse for a datagram already held in a string; it does not
// allocate.
func ParseString(s string) (Event, error) {
	var ev Event
	if len(s) == 0 {
		return ev, &ParseError{Offset: 0, Reason: "empty datagram"}
	}
	if strings.HasPrefix(s, "libudev\x00") {
		return ev, &ParseError{Offset: 0, Reason: "libudev monitor message, not a kernel uevent"}
	}
	hlen := strings.IndexByte(s, 0)
	if hlen < 0 {
		return ev, &ParseError{Offset: len(s), Reason: "header ACTION@DEVPATH is not NUL-terminated"}
	}
	header := s[:hlen]
	at := strings.IndexByte(header, '@')
	if at < 0 {
		return ev, &ParseError{Offset: 0, Reason: "header has no '@' (want ACTION@DEVPATH)"}
	}
	act, ok := ParseAction(header[:at])
	if !ok {
		return ev, &ParseError{Offset: 0, Field: "ACTION", Reason: "unknown action " + strconv.Quote(header[:at])}
	}
	hpath := header[at+1:]
	if len(hpath) == 0 || hpath[0] != '/' {
		return ev, &ParseError{Offset: at + 1, Field: "DEVPATH", Reason: "header device path does not start with '/'"}
	}
	if reason := checkDevPath(hpath); reason != "" {
		return ev, &ParseError{Offset: at + 1, Field: "DEVPATH", Reason: reason}
	}
	ev.Action = act
	// Trailing NULs are framing, not fields; AppendBinary adds one back.
	ev.env = strings.TrimRight(s[hlen+1:], "\x00")
	var haveAction, haveDevpath bool
	var seqnum string
	off := hlen + 1
	rest := ev.env
	for len(rest) > 0 {
		i := strings.IndexByte(rest, 0)
		var f string
		if i < 0 {
			f, rest = rest, ""
		} else {
			f, rest = rest[:i], rest[i+1:]
		}
		if f == "" {
			return Event{}, &ParseError{Offset: off, Reason: "empty field"}
		}
		eq := strings.IndexByte(f, '=')
		if eq <= 0 {
			return Event{}, &ParseError{Offset: off, Reason: "field " + strconv.Quote(truncate(f)) + " is not KEY=VALUE"}
		}
		k, v := f[:eq], f[eq+1:]
		switch k {
		case "ACTION":
			if v != header[:at] {
				return Event{}, &ParseError{Offset: off, Field: k, Reason: "ACTION=" + strconv.Quote(truncate(v)) + " disagrees with header"}
			}
			haveAction = true
		case "DEVPATH":
			if v != hpath {
				return Event{}, &ParseError{Offset: off, Field: k, Reason: "DEVPATH disagrees with header"}
			}
			ev.DevPath = v
			haveDevpath = true
		case "SUBSYSTEM":
			ev.Subsystem = v
		case "DEVTYPE":
			ev.DevType = v
		case "DRIVER":
			ev.Driver = v
		case "SEQNUM":
			seqnum = v
		}
		off += len(f) + 1
	}
	switch {
	case !haveAction:
		return Event{}, &ParseError{Offset: -1, Field: "ACTION", Reason: "missing"}
	case !haveDevpath:
		return Event{}, &ParseError{Offset: -1, Field: "DEVPATH", Reason: "missing"}
	case ev.Subsystem == "":
		return Event{}, &ParseError{Offset: -1, Field: "SUBSYSTEM", Reason: "missing"}
	}
	if seqnum != "" {
		n, err := strconv.ParseUint(seqnum, 10, 64)
		if err != nil {
			return Event{}, &ParseError{Offset: -1, Field: "SEQNUM", Reason: "not a decimal number: " + strconv.Quote(truncate(seqnum))}
		}
		ev.Seqnum = n
	}
	return ev, nil
}

// truncate keeps error messages about hostile input short.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// checkDevPath says what is wrong with a device path the kernel would never
// send: an empty component ("//", a trailing "/"), "." or "..", or a
// control character. The bridge joins DEVPATH under /sys; an embedder's
// source must not be able to steer it out (defence in depth: only the
// kernel passes the netlink sender checks). It does not allocate.
func checkDevPath(p string) string {
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) {
			c := p[i]
			if c < 0x20 || c == 0x7f {
				return "device path contains a control character"
			}
			if c != '/' {
				continue
			}
		}
		switch p[start:i] {
		case "":
			return "device path has an empty component"
		case ".", "..":
			return "device path has a '.' or '..' component"
		}
		start = i + 1
	}
	return ""
}

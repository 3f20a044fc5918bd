package hotplug

import (
	"errors"
	"fmt"
)

var (
	// ErrMalformed is matched (errors.Is) by every *ParseError.
	ErrMalformed = errors.New("malformed uevent")
	// ErrClosed is returned by Next after Close.
	ErrClosed = errors.New("source closed")
	// ErrNotApplicable is returned by a typed view asked of an event of
	// another subsystem or device type.
	ErrNotApplicable = errors.New("event is not of this device type")
	// ErrPermission is returned when a real-kernel operation needs root.
	ErrPermission = errors.New("operation needs root (CAP_NET_ADMIN)")
)

// ParseError says why a datagram or an environment value is not a valid
// uevent, and where. It matches ErrMalformed.
type ParseError struct {
	Offset int    // byte offset in the datagram, -1 when not applicable
	Field  string // the field concerned, if any
	Reason string
}

func (e *ParseError) Error() string {
	s := "malformed uevent"
	if e.Offset >= 0 {
		s += fmt.Sprintf(" at byte %d", e.Offset)
	}
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	return s + ": " + e.Reason
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

// OpError wraps the cause of a failed source or sysfs operation.
type OpError struct {
	Op   string // "socket", "bind", "recvmsg", "walk", ...
	Path string // sysfs path, if any
	Err  error
}

func (e *OpError) Error() string {
	if e.Path != "" {
		return e.Op + " " + e.Path + ": " + e.Err.Error()
	}
	return e.Op + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

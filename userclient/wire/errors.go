package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Sentinel errors, one per error code. The server picks an error's code
// with CodeOf; the client turns a received code back into a RemoteError
// that matches the same sentinel with errors.Is, so an application tests
// for the same values whether an error was made locally or came over the
// socket. The userclient package re-exports them under the same names.
var (
	// ErrProtocol: a frame was malformed, too large, of an unknown type, or
	// the peers share no protocol version.
	ErrProtocol = errors.New("protocol error")
	// ErrPermission: the policy does not allow this peer to do this.
	ErrPermission = errors.New("permission denied")
	// ErrNoService: nothing matches, or the service is no longer there.
	ErrNoService = errors.New("no such service")
	// ErrTerminated: the service went away (unplug, unload, terminate)
	// while it was open or while a call was in flight.
	ErrTerminated = errors.New("service terminated")
	// ErrNoDevice: the device behind the service vanished (surprise
	// removal) during the call.
	ErrNoDevice = errors.New("no such device")
	// ErrNoMethod: the driver declares no method of that name.
	ErrNoMethod = errors.New("no such method")
	// ErrClosed: the handle, client, connection or server was closed.
	ErrClosed = errors.New("closed")
	// ErrOverflow: the peer did not read its notifications or replies and
	// its bounded buffer filled up; the connection was dropped.
	ErrOverflow = errors.New("peer not reading, buffer overflow")
	// ErrLimit: a per-connection, per-user or server-wide resource limit
	// (connections, handles, waiting opens) was reached; nothing was done.
	ErrLimit = errors.New("resource limit reached")
)

// Error codes on the wire (PROTOCOL.md, "Errors"). Values are part of the
// wire format; never change one.
const (
	CodeProtocol   = "protocol"
	CodeVersion    = "version"
	CodePermission = "permission"
	CodeNoService  = "no_service"
	CodeTerminated = "terminated"
	CodeNoMethod   = "no_method"
	CodeNoDevice   = "no_device"
	CodeClosed     = "closed"
	CodeOverflow   = "overflow"
	CodeBadRequest = "bad_request"
	CodeFailed     = "failed"
	CodeCancelled  = "cancelled"
	CodeLimit      = "limit"
)

var codeSentinel = map[string]error{
	CodeProtocol:   ErrProtocol,
	CodeVersion:    ErrProtocol,
	CodePermission: ErrPermission,
	CodeNoService:  ErrNoService,
	CodeTerminated: ErrTerminated,
	CodeNoMethod:   ErrNoMethod,
	CodeNoDevice:   ErrNoDevice,
	CodeClosed:     ErrClosed,
	CodeOverflow:   ErrOverflow,
	CodeBadRequest: ErrProtocol,
	CodeLimit:      ErrLimit,
	// The client cancelled the request (version 2): the answer to a
	// request it no longer waits for, seen only by clients that read it.
	CodeCancelled: context.Canceled,
}

// codeOrder is the order CodeOf tries the sentinels in. no_device comes
// first: a vanished device is why a call failed and why the service is
// being terminated, the more useful of the two to an application.
var codeOrder = []string{CodeNoDevice, CodeTerminated, CodePermission, CodeNoService, CodeNoMethod, CodeClosed, CodeOverflow, CodeLimit, CodeProtocol}

// CodeOf picks the wire code for err: a RemoteError's own, protocol for a
// ProtocolError, the code of the first sentinel err matches, failed for
// anything else.
func CodeOf(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return CodeProtocol
	}
	for _, c := range codeOrder {
		if errors.Is(err, codeSentinel[c]) {
			return c
		}
	}
	return CodeFailed
}

// Sentinel returns the error code's sentinel, or nil for a code that has
// none (failed, or one this version does not know).
func Sentinel(code string) error { return codeSentinel[code] }

// ProtocolError says what was wrong with the bytes received.
type ProtocolError struct {
	Detail string
	Err    error // the underlying cause (e.g. io.ErrUnexpectedEOF), may be nil
}

func (e *ProtocolError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("protocol error: %s: %v", e.Detail, e.Err)
	}
	return "protocol error: " + e.Detail
}

// Is makes errors.Is(err, ErrProtocol) true.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func (e *ProtocolError) Unwrap() error { return e.Err }

// Errorf returns a ProtocolError with the formatted detail and cause (nil
// if none).
func Errorf(cause error, format string, args ...any) *ProtocolError {
	return &ProtocolError{Detail: fmt.Sprintf(format, args...), Err: cause}
}

// RemoteError is an error frame received from (or sent to) the peer. It
// matches the sentinel for its code with errors.Is, and reads as the
// peer's message: the peer already said what happened.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	if s := codeSentinel[e.Code]; s != nil {
		return s.Error()
	}
	return "error code " + e.Code
}

// Is maps the wire code back to its sentinel.
func (e *RemoteError) Is(target error) bool {
	s, ok := codeSentinel[e.Code]
	return ok && s == target
}

// DecodeError decodes an error frame's control payload into a
// *RemoteError, or a *ProtocolError if it is not one.
func DecodeError(control []byte) error {
	var m ErrorMsg
	if err := json.Unmarshal(control, &m); err != nil || m.Code == "" {
		return Errorf(err, "bad error payload %q", control)
	}
	return &RemoteError{Code: m.Code, Message: m.Message}
}

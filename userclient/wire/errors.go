package wire

import (
	"context"
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/driver"
)

// Sentinel errors, matchable with errors.Is on every error this package
// returns, whether it was produced locally or received from the server.
var (
	// ErrProtocol: a frame was malformed, too large, of an unknown type, or
	// the peers share no protocol version.
	ErrProtocol = errors.New("userclient: protocol error")
	// ErrPermission: the policy does not allow this peer to do this.
	ErrPermission = errors.New("userclient: permission denied")
	// ErrNoService: nothing matches, or the service is no longer there.
	ErrNoService = errors.New("userclient: no such service")
	// ErrTerminated: the service went away (unplug, unload, terminate)
	// while it was open or while a call was in flight.
	ErrTerminated = errors.New("userclient: service terminated")
	// ErrNoDevice: the device behind the service vanished (surprise
	// removal) during the call. It is driver.ErrNoDevice itself, so an
	// application may test for either; the service's termination
	// (ErrTerminated on later calls) follows.
	ErrNoDevice = driver.ErrNoDevice
	// ErrNoMethod: the driver declares no method of that name.
	ErrNoMethod = errors.New("userclient: no such method")
	// ErrClosed: the handle, client or server was closed.
	ErrClosed = errors.New("userclient: closed")
	// ErrOverflow: the peer did not read its notifications or replies and
	// its bounded buffer filled up; the connection was dropped.
	ErrOverflow = errors.New("userclient: peer not reading, buffer overflow")
	// ErrAddrInUse: another server answers on the socket path.
	ErrAddrInUse = errors.New("userclient: socket path in use by a live server")
	// ErrNotSocket: the socket path exists and is not a socket; it is never
	// removed.
	ErrNotSocket = errors.New("userclient: path exists and is not a socket")
	// ErrClientDied is the reason an embedded client's connection ended
	// when its context was cancelled (Server.Embed).
	ErrClientDied = fmt.Errorf("userclient: embedded client's context was cancelled: %w", ErrClosed)
)

// Error codes on the wire (PROTOCOL.md, "Errors").
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
	// The client cancelled the request (version 2): the answer to a
	// request it no longer waits for, seen only by clients that read it.
	CodeCancelled: context.Canceled,
}

// codeOf picks the wire code for err.
func codeOf(err error) string {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return CodeProtocol
	}
	// no_device first: a vanished device is why a call failed and why the
	// service is being terminated, the more useful of the two to an
	// application.
	for _, c := range []string{CodeNoDevice, CodeTerminated, CodePermission, CodeNoService, CodeNoMethod, CodeClosed, CodeOverflow, CodeProtocol} {
		if errors.Is(err, codeSentinel[c]) {
			return c
		}
	}
	return CodeFailed
}

// ProtocolError says what was wrong with the bytes received.
type ProtocolError struct {
	Detail string
	Err    error // the underlying cause (e.g. io.ErrUnexpectedEOF), may be nil
}

func (e *ProtocolError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("userclient: protocol error: %s: %v", e.Detail, e.Err)
	}
	return "userclient: protocol error: " + e.Detail
}

// Is makes errors.Is(err, ErrProtocol) true.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func (e *ProtocolError) Unwrap() error { return e.Err }

func protoErr(cause error, format string, args ...any) *ProtocolError {
	return &ProtocolError{Detail: fmt.Sprintf(format, args...), Err: cause}
}

// RemoteError is an error frame received from (or sent to) the peer. It
// matches the sentinel for its code with errors.Is.
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("userclient: %s: %s", e.Code, e.Message)
}

// Is maps the wire code back to this package's sentinels.
func (e *RemoteError) Is(target error) bool {
	s, ok := codeSentinel[e.Code]
	return ok && s == target
}

// OpError says which operation failed.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return "userclient: " + e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

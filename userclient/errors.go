package userclient

import (
	"errors"
	"fmt"

	"github.com/drvkit/drvkit/userclient/wire"
)

// Sentinel errors, matchable with errors.Is on every error this package
// returns, whether it was produced locally or received from the server
// (they are the wire package's: the server sends an error's code, and the
// client maps it back to the same value).
var (
	// ErrProtocol: a frame was malformed, too large, of an unknown type, or
	// the peers share no protocol version.
	ErrProtocol = wire.ErrProtocol
	// ErrPermission: the policy does not allow this peer to do this.
	ErrPermission = wire.ErrPermission
	// ErrNoService: nothing matches, or the service is no longer there; a
	// Dial that finds no daemon listening matches it too.
	ErrNoService = wire.ErrNoService
	// ErrTerminated: the service went away (unplug, unload, terminate)
	// while it was open or while a call was in flight.
	ErrTerminated = wire.ErrTerminated
	// ErrNoDevice: the device behind the service vanished (surprise
	// removal). A call fails with it whether it met the vanished device
	// or only the service's termination that the unplug caused (the
	// daemon answers no_device; a handle that already heard of the
	// termination answers itself with an error matching both ErrNoDevice
	// and ErrTerminated). Terminations with other causes (unload,
	// administrator, shutdown) fail calls with ErrTerminated alone.
	ErrNoDevice = wire.ErrNoDevice
	// ErrNoMethod: the driver declares no method of that name.
	ErrNoMethod = wire.ErrNoMethod
	// ErrClosed: the handle or the connection was closed.
	ErrClosed = wire.ErrClosed
	// ErrOverflow: the peer did not read its notifications or replies and
	// its bounded buffer filled up; the connection was dropped.
	ErrOverflow = wire.ErrOverflow
	// ErrLimit: the server refused because a resource limit was reached
	// (connections per user, handles per connection, waiting opens).
	ErrLimit = wire.ErrLimit
	// ErrUntrustedServer: Dial found a server running as a user that is
	// neither root nor the caller (see WithServerUID); nothing was sent.
	ErrUntrustedServer = errors.New("untrusted server")
)

// errUnplugged is a call's error on a handle whose service was terminated
// because its device was unplugged.
var errUnplugged = fmt.Errorf("%w: %w (unplugged)", ErrTerminated, ErrNoDevice)

// ProtocolError says what was wrong with the bytes received (errors.Is
// ErrProtocol).
type ProtocolError = wire.ProtocolError

// RemoteError is an error the server sent: its wire code and message. It
// matches the sentinel of its code with errors.Is.
type RemoteError = wire.RemoteError

// OpError says which operation failed, on what, and why. Its text is
// "<op> <what>: <why>", for example
//
//	open personality=nosuch: no such service
//	call SCSIDisk#12 read: service terminated
//	dial /run/drvkit.sock: no daemon listening: connect: connection refused
type OpError struct {
	// Op is the operation: dial, open, call, close, admin, ping.
	Op string
	// Path is the socket path (dial).
	Path string
	// Match is what open looked for.
	Match *Match
	// Service is the open service a call or close was on.
	Service *ServiceInfo
	// Method is the driver method (call) or the administrative operation
	// (admin).
	Method string
	Err    error
}

func (e *OpError) Error() string {
	s := e.Op
	add := func(v string) {
		if v != "" {
			s += " " + v
		}
	}
	add(e.Path)
	if e.Match != nil {
		add(e.Match.String())
	}
	if e.Service != nil {
		add(e.Service.String())
	}
	add(e.Method)
	if e.Err == nil {
		return s
	}
	return s + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// noDaemon is a dial that found nothing listening: it matches ErrNoService
// (nothing to open there) and keeps the system call's error.
type noDaemon struct{ err error }

func (e *noDaemon) Error() string        { return "no daemon listening: " + e.err.Error() }
func (e *noDaemon) Unwrap() error        { return e.err }
func (e *noDaemon) Is(target error) bool { return target == ErrNoService }

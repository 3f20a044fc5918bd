package server

import (
	"context"
	"encoding/json"
	"io"

	"github.com/drvkit/drvkit/userclient"
)

// Backend is what the server opens services on: the driver registry in the
// daemon (see NewRegistryBackend), anything with the same semantics in tests.
type Backend interface {
	// Lookup lists the services m matches, best first. The server picks the
	// first one the policy allows.
	Lookup(m userclient.Match) ([]userclient.ServiceInfo, error)
	// Open attaches a user client to the service with the given ID on behalf
	// of req.Cred and opens it. It fails with userclient.ErrNoService if the
	// service is gone or no longer active.
	Open(ctx context.Context, id uint64, req OpenRequest) (Session, error)
}

// Watcher is implemented by backends that can say when Lookup may have
// more to return, so that an open that waits for its service (OpenWait)
// sleeps instead of polling.
type Watcher interface {
	// Watch returns a channel closed at the next change that may make a
	// service openable (one published, a driver started), and stop, which
	// the caller must call when it no longer waits.
	Watch() (changed <-chan struct{}, stop func())
}

// OpenRequest carries who opens and where notifications go.
type OpenRequest struct {
	Cred userclient.Cred
	// Notify delivers a notification to the application. It never blocks
	// (a client that does not read is disconnected instead) and may be
	// called from any goroutine, including the registry's own.
	Notify func(userclient.Notification)
	// to is the server's entry Notify delivers to, when the server made
	// the request: the registry backend calls it without the func value
	// (a fan-out then touches one object less per client).
	to *entry
}

// Session is one open service: the user client and what it holds.
//
// Errors a session returns reach the application as the wire code of the
// userclient sentinel they match (userclient.ErrTerminated, ErrNoMethod,
// ErrNoDevice, …) with their text as the message.
type Session interface {
	// Info describes the opened service.
	Info() userclient.ServiceInfo
	// ClientID is the ID of the user-client service (0 if none).
	ClientID() uint64
	// Call runs a driver method. It returns userclient.ErrTerminated if the
	// service goes away before or during the call — matching
	// userclient.ErrNoDevice too when it went because its device was
	// unplugged — and userclient.ErrNoMethod for an unknown name.
	Call(ctx context.Context, method string, in []byte) ([]byte, error)
	// Close is the orderly close the application asked for.
	Close() error
	// ClientDied is the cleanup when the application is gone: close the
	// provider, terminate the user client, release everything. It must not
	// block on the application, and is idempotent with Close.
	ClientDied()
}

// StreamedResult is an admin result written out rather than marshalled
// whole: on a protocol version 3 connection the server sends what
// WriteJSON writes, as the reply's control JSON, in part frames as it
// comes, waiting for the client to read (a Write then blocks, and fails
// when the request is cancelled or the connection ends: WriteJSON must
// return that error). The daemon so never holds the whole encoding of a
// large reply. For older peers it is collected into one frame.
type StreamedResult interface {
	WriteJSON(w io.Writer) error
}

// AdminFunc serves administrative calls (terminate, unload, leaks, inspect,
// …: the userclient.Admin* names). The server has already checked the
// policy (uid 0 or an admin group). args is the request's JSON; the result
// is sent back as JSON (see StreamedResult for a large one) plus raw data.
type AdminFunc func(ctx context.Context, cred userclient.Cred, op string, args json.RawMessage, data []byte) (result any, out []byte, err error)

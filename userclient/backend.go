package userclient

import (
	"context"
	"encoding/json"
	"fmt"
)

// Backend is what the server opens services on: the driver registry in the
// daemon (see NewRegistryBackend), anything with the same semantics in tests.
type Backend interface {
	// Lookup lists the services m matches, best first. The server picks the
	// first one the policy allows.
	Lookup(m Match) ([]ServiceInfo, error)
	// Open attaches a user client to the service with the given ID on behalf
	// of req.Cred and opens it. It fails with ErrNoService if the service is
	// gone or no longer active.
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
	Cred Cred
	// Notify delivers a notification to the application. It never blocks
	// (a client that does not read is disconnected instead) and may be
	// called from any goroutine, including the registry's own.
	Notify func(Notification)
}

// Session is one open service: the user client and what it holds.
type Session interface {
	// Info describes the opened service.
	Info() ServiceInfo
	// ClientID is the ID of the user-client service (0 if none).
	ClientID() uint64
	// Call runs a driver method. It returns ErrTerminated if the service
	// goes away before or during the call, ErrNoMethod for an unknown name.
	Call(ctx context.Context, method string, in []byte) ([]byte, error)
	// Close is the orderly close the application asked for.
	Close() error
	// ClientDied is the cleanup when the application is gone: close the
	// provider, terminate the user client, release everything. It must not
	// block on the application, and is idempotent with Close.
	ClientDied()
}

// Match selects services. Empty fields match anything; at least one field
// must be set.
type Match struct {
	ID          uint64            `json:"id,omitempty"`
	Class       string            `json:"class,omitempty"`
	Name        string            `json:"name,omitempty"`
	Personality string            `json:"personality,omitempty"`
	Properties  map[string]string `json:"properties,omitempty"`
}

func (m *Match) empty() bool {
	return m.ID == 0 && m.Class == "" && m.Name == "" && m.Personality == "" && len(m.Properties) == 0
}

// Matches reports whether s satisfies m (property values compare as their
// JSON text without quotes for strings).
func (m *Match) Matches(s ServiceInfo) bool {
	if m.ID != 0 && m.ID != s.ID || m.Class != "" && m.Class != s.Class ||
		m.Name != "" && m.Name != s.Name || m.Personality != "" && m.Personality != s.Personality {
		return false
	}
	for k, v := range m.Properties {
		if s.Properties[k] != v {
			return false
		}
	}
	return true
}

// ServiceInfo describes a service as the policy and the application see it.
type ServiceInfo struct {
	ID          uint64            `json:"id"`
	Class       string            `json:"class"`
	Name        string            `json:"name,omitempty"`
	Personality string            `json:"personality,omitempty"` // the driver (personality) name of a driver instance
	Properties  map[string]string `json:"properties,omitempty"`
}

// NotificationType names what happened to an open service.
type NotificationType string

// Notification types forwarded from the registry. Driver-defined messages
// carry the driver's own type name.
const (
	ServiceIsTerminated      NotificationType = "ServiceIsTerminated"
	ServiceIsRequestingClose NotificationType = "ServiceIsRequestingClose"
	ServiceWasClosed         NotificationType = "ServiceWasClosed"
)

// Notification is pushed to the application for one open handle.
type Notification struct {
	Type    NotificationType
	Service uint64 // the service it concerns
	Detail  string // human-readable detail, optional
	Data    []byte // driver message payload, optional
}

// Cred identifies the peer of a connection, taken from the kernel
// (SO_PEERCRED, SO_PEERGROUPS) when it connected.
type Cred struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, if the kernel reports them
	// Comm is the peer's command name, for labels (leak reports, drvctl
	// why). Empty: read from /proc/PID/comm when needed.
	Comm string
}

// Label names the peer for people: "pid 4242 uid 1000 (scsiapp)", the
// command name from Comm or else /proc/PID/comm, left out when unknown.
func (c Cred) Label() string {
	comm := c.Comm
	if comm == "" && c.PID > 0 {
		comm = commandName(c.PID)
	}
	if comm == "" {
		return fmt.Sprintf("pid %d uid %d", c.PID, c.UID)
	}
	return fmt.Sprintf("pid %d uid %d (%s)", c.PID, c.UID, comm)
}

// AdminFunc serves administrative calls (terminate, unload, leaks, inspect,
// …). The server has already checked the policy (uid 0 or an admin group).
// args is the request's JSON; the result is sent back as JSON plus raw data.
type AdminFunc func(ctx context.Context, cred Cred, op string, args json.RawMessage, data []byte) (result any, out []byte, err error)

// Reserved administrative operations the daemon implements.
const (
	AdminTerminate = "terminate"
	AdminUnload    = "unload"
	AdminLeaks     = "leaks"
	AdminInspect   = "inspect"
)

package wire

import "encoding/json"

// JSON control payloads (PROTOCOL.md, "Messages"). Field names are part of
// the wire format.

// HelloMsg is the client's first frame.
type HelloMsg struct {
	Protocol string `json:"protocol"`
	Versions []int  `json:"versions"`
	Client   string `json:"client,omitempty"`
	// Direct (version 4) makes this connection the direct call channel
	// of the open handle whose open reply carried this token: once
	// welcomed, its calls are served by the driver's own process.
	Direct string `json:"direct,omitempty"`
}

// WelcomeMsg is the server's answer to hello.
type WelcomeMsg struct {
	Protocol string `json:"protocol"`
	Version  int    `json:"version"`
	MaxFrame int    `json:"max_frame"`
	PID      int32  `json:"pid"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid"`
	// MaxInflight is the server's per-connection limit on outstanding
	// requests (version 2; 0 from a version 1 server: unknown).
	MaxInflight int `json:"max_inflight,omitempty"`
	// Direct (version 4): this connection was handed to the driver's
	// process; what follows is served by it.
	Direct bool `json:"direct,omitempty"`
}

// OpenMsg opens a service.
type OpenMsg struct {
	Match Match `json:"match"`
	// Wait (version 2): when nothing matches yet, wait for a matching
	// service to be published or to finish starting, until cancelled.
	Wait bool `json:"wait,omitempty"`
}

// OpenReply answers an open.
type OpenReply struct {
	Handle  uint64      `json:"handle"`
	Service ServiceInfo `json:"service"`
	Client  uint64      `json:"client,omitempty"` // the user-client service's ID, if the backend has one
	// Direct (version 4): the service's driver runs in a process of its
	// own and can serve this handle's calls itself: a hello carrying this
	// token, on a new connection, makes that connection its call channel.
	Direct string `json:"direct,omitempty"`
}

// HandleMsg names a handle: close, and call with its method.
type HandleMsg struct {
	Handle uint64 `json:"handle"`
	Method string `json:"method,omitempty"`
}

// NotificationMsg is a notification's control payload.
type NotificationMsg struct {
	Handle    uint64 `json:"handle"`
	Type      string `json:"type"`
	Service   uint64 `json:"service,omitempty"`
	Cause     string `json:"cause,omitempty"`
	RootCause string `json:"root_cause,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

// ErrorMsg is an error frame's control payload.
type ErrorMsg struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// AdminMsg is an administrative call.
type AdminMsg struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Reserved administrative operations the daemon implements.
const (
	AdminTerminate = "terminate"
	AdminUnload    = "unload"
	AdminLeaks     = "leaks"
	AdminInspect   = "inspect"
)

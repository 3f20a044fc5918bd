package userclient

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/drvkit/drvkit/userclient/wire"
)

// The types an application and a server exchange are the wire package's;
// they are named here so that an application needs only this package.
type (
	// Match selects services. Empty fields match anything; at least one
	// field must be set.
	Match = wire.Match
	// ServiceInfo describes a service as the policy and the application
	// see it.
	ServiceInfo = wire.ServiceInfo
	// NotificationType names what happened to an open service.
	NotificationType = wire.NotificationType
	// Notification is pushed to the application for one open handle.
	Notification = wire.Notification
)

// Notification types forwarded from the registry. Driver-defined messages
// carry the driver's own type name.
const (
	ServiceIsTerminated      = wire.ServiceIsTerminated
	ServiceIsRequestingClose = wire.ServiceIsRequestingClose
	ServiceWasClosed         = wire.ServiceWasClosed
)

// Administrative operations the daemon implements (see (*Client).Admin).
const (
	AdminTerminate = wire.AdminTerminate
	AdminUnload    = wire.AdminUnload
	AdminLeaks     = wire.AdminLeaks
	AdminInspect   = wire.AdminInspect
)

// Cred identifies the peer of a connection, taken from the kernel
// (SO_PEERCRED, SO_PEERGROUPS) when it connected.
type Cred struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups, if the kernel reports them (server side only)
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

// commandName is the process's command name (/proc/PID/comm), "" when it
// cannot be read (the process is gone, /proc is not mounted, not Linux).
func commandName(pid int32) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

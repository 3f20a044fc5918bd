package driver

import (
	"errors"
	"fmt"
	"strconv"
)

// Cause says why a service was terminated. Messages about a termination
// (ServiceIsTerminated, ServiceIsRequestingClose) carry it, and so do the
// terminate lifecycle events.
//
// A service terminated directly — the nub of a removed device, the
// instances of an unloaded driver, the service an administrator named —
// has the cause given to the termination. A service terminated by the
// cascade, because its last active provider went, has
// CauseProviderTerminated, and keeps the direct service's cause as its root
// cause: an application whose user client's driver went because the device
// was unplugged hears "provider terminated", root "device removed", and
// can tell that from an unload or a shutdown.
type Cause uint8

const (
	// CauseUnknown is the zero value: Terminate and TerminateSync, called
	// without a cause, say nothing about why.
	CauseUnknown Cause = iota
	// CauseUnplug: the device was removed (the hot-plug bridge saw the
	// kernel's remove).
	CauseUnplug
	// CauseUnload: the service's driver was unloaded (Registry.Unload).
	CauseUnload
	// CauseAdmin: an administrator terminated the service (drvctl terminate).
	CauseAdmin
	// CauseProviderTerminated: the service's last active provider was
	// terminated; the root cause says why that one was.
	CauseProviderTerminated
	// CauseShutdown: the registry is closing (the daemon shuts down).
	CauseShutdown
	// CauseCrashed: the process running the driver out of process
	// (package driver/host) exited, was killed or broke the protocol; the
	// host terminates the instance and runs matching on its nub again.
	CauseCrashed
	numCauses
)

// causeNames is each cause's stable short text (the wire and JSON form)
// and its description (String).
var causeNames = [numCauses]struct{ text, desc string }{
	CauseUnknown:            {"unknown", "unknown cause"},
	CauseUnplug:             {"unplug", "device removed"},
	CauseUnload:             {"unload", "driver unloaded"},
	CauseAdmin:              {"admin", "terminated by administrator"},
	CauseProviderTerminated: {"provider", "provider terminated"},
	CauseShutdown:           {"shutdown", "daemon shutdown"},
	CauseCrashed:            {"crashed", "driver crashed"},
}

// String describes the cause for people: "device removed".
func (c Cause) String() string {
	if c < numCauses {
		return causeNames[c].desc
	}
	return "Cause(" + strconv.Itoa(int(c)) + ")"
}

// Text is the cause's stable short form, for the wire, JSON and
// command lines: "unplug", "unload", "admin", "provider", "shutdown",
// "crashed", "unknown". ParseCause is its inverse. A value out of range gives
// "Cause(N)", which ParseCause refuses.
func (c Cause) Text() string {
	if c < numCauses {
		return causeNames[c].text
	}
	return c.String()
}

// errBadCause is what ParseCause wraps.
var errBadCause = errors.New("unknown termination cause")

// ParseCause is the inverse of Cause.Text ("unplug" → CauseUnplug). Any
// other text, including the descriptions String gives, is an error.
func ParseCause(text string) (Cause, error) {
	for c := range numCauses {
		if causeNames[c].text == text {
			return c, nil
		}
	}
	return CauseUnknown, fmt.Errorf("%w %q", errBadCause, text)
}

// MarshalText is Text, refusing a value out of range.
func (c Cause) MarshalText() ([]byte, error) {
	if c >= numCauses {
		return nil, fmt.Errorf("%w %d", errBadCause, uint8(c))
	}
	return []byte(causeNames[c].text), nil
}

// UnmarshalText is ParseCause.
func (c *Cause) UnmarshalText(b []byte) error {
	v, err := ParseCause(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

package scsi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Linux SCSI midlayer host bytes (DID_*) and driver bytes (DRIVER_*) as sg
// reports them in sg_io_hdr.host_status / driver_status.
const (
	hostOK                 = 0x00
	hostNoConnect          = 0x01
	hostBusBusy            = 0x02
	hostTimeOut            = 0x03
	hostBadTarget          = 0x04
	hostAbort              = 0x05
	hostError              = 0x07
	hostReset              = 0x08
	hostSoftError          = 0x0b
	hostImmRetry           = 0x0c
	hostRequeue            = 0x0d
	hostTransportDisrupted = 0x0e
	hostTransportFailfast  = 0x0f
	hostTransportMarginal  = 0x14

	driverOK      = 0x00
	driverBusy    = 0x01
	driverTimeout = 0x06
	driverSense   = 0x08
)

// HostError reports a non-zero host or driver status from the kernel's SCSI
// midlayer. It matches ErrNoDevice when the target is gone, ErrTimeout on
// timeouts, ErrBusy on retryable conditions, and ErrTransport otherwise.
//
// Whether the target is gone is not guessed from the host status: when a
// device disappears mid-command the midlayer fails what was in flight with
// whatever the host driver reports — DID_NO_CONNECT or DID_BAD_TARGET, but
// also DID_ABORT, DID_ERROR, DID_RESET, DID_TIME_OUT or a transport
// status (virtio-scsi completes them with the hypervisor's "aborted" or
// "reset") — and the same statuses happen on a device that stays. So for
// any status but the two that always mean gone, the transport reads the
// device's state in sysfs (State): "cancel", "deleted", "offline",
// "transport-offline" or a vanished device directory mean gone (Gone).
type HostError struct {
	Host, Driver uint16
	// State is the device's sysfs state read after the failure ("" if not
	// read); Gone says it showed the device gone.
	State string
	Gone  bool
}

func (e *HostError) Error() string {
	s := fmt.Sprintf("host status 0x%02x (%s), driver status 0x%02x", e.Host, hostName(e.Host), e.Driver)
	if e.State != "" {
		s += ", device state " + e.State
	}
	return s
}

// Is implements errors.Is matching.
func (e *HostError) Is(target error) bool {
	switch target {
	case ErrNoDevice:
		return e.Host == hostNoConnect || e.Host == hostBadTarget || e.Gone
	case ErrTimeout:
		return e.Host == hostTimeOut || e.Driver&0x0f == driverTimeout
	case ErrBusy:
		switch e.Host {
		case hostBusBusy, hostSoftError, hostImmRetry, hostRequeue, hostTransportDisrupted:
			return true
		}
		return e.Driver&0x0f == driverBusy
	case ErrTransport:
		return true
	}
	return false
}

func hostName(h uint16) string {
	switch h {
	case hostOK:
		return "DID_OK"
	case hostNoConnect:
		return "DID_NO_CONNECT"
	case hostBusBusy:
		return "DID_BUS_BUSY"
	case hostTimeOut:
		return "DID_TIME_OUT"
	case hostBadTarget:
		return "DID_BAD_TARGET"
	case hostAbort:
		return "DID_ABORT"
	case hostError:
		return "DID_ERROR"
	case hostReset:
		return "DID_RESET"
	case hostSoftError:
		return "DID_SOFT_ERROR"
	case hostImmRetry:
		return "DID_IMM_RETRY"
	case hostRequeue:
		return "DID_REQUEUE"
	case hostTransportDisrupted:
		return "DID_TRANSPORT_DISRUPTED"
	case hostTransportFailfast:
		return "DID_TRANSPORT_FAILFAST"
	case hostTransportMarginal:
		return "DID_TRANSPORT_MARGINAL"
	}
	return "unknown"
}

// deviceGone reads a SCSI device's state file (…/<h:c:t:l>/state) until it
// shows the device gone or settle passes. A missing file (the device
// directory was removed) is gone too; an empty path is never gone.
func deviceGone(stateFile string, settle time.Duration) (state string, gone bool) {
	if stateFile == "" {
		return "", false
	}
	deadline := time.Now().Add(settle)
	for {
		b, err := os.ReadFile(stateFile)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "removed", true
		case err != nil:
			return "", false
		}
		state = strings.TrimSpace(string(b))
		switch state {
		case "cancel", "deleted", "offline", "transport-offline":
			return state, true
		}
		if !time.Now().Before(deadline) {
			return state, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package scsi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

// Linux SCSI midlayer host bytes (DID_*, include/scsi/scsi_status.h) and
// driver bytes (DRIVER_*) as sg reports them in sg_io_hdr.host_status /
// driver_status.
const (
	hostOK                 = 0x00
	hostNoConnect          = 0x01
	hostBusBusy            = 0x02
	hostTimeOut            = 0x03
	hostBadTarget          = 0x04
	hostAbort              = 0x05
	hostParity             = 0x06
	hostError              = 0x07
	hostReset              = 0x08
	hostBadIntr            = 0x09
	hostPassthrough        = 0x0a
	hostSoftError          = 0x0b
	hostImmRetry           = 0x0c
	hostRequeue            = 0x0d
	hostTransportDisrupted = 0x0e
	hostTransportFailfast  = 0x0f
	hostTargetFailure      = 0x10
	hostNexusFailure       = 0x11
	hostAllocFailure       = 0x12
	hostMediumError        = 0x13
	hostTransportMarginal  = 0x14

	driverOK      = 0x00
	driverBusy    = 0x01
	driverTimeout = 0x06
	driverSense   = 0x08
)

// hostKind is what a host status says on its own.
type hostKind uint8

const (
	hostKindOther   hostKind = iota // gone only if the device's state says so
	hostKindGone                    // the midlayer's own "not there": always gone
	hostKindTimeout                 // a timeout, unless the device's state says gone
	hostKindBusy                    // retryable, unless the device's state says gone
)

// hostStatuses names every host status and says what it means by itself.
// Only DID_NO_CONNECT and DID_BAD_TARGET mean gone whatever the state: the
// midlayer sets DID_NO_CONNECT on a command it refuses because the device
// is deleted, offline or transport-offline (scsi_queue_rq) or its host is
// going, and host drivers report DID_BAD_TARGET for a target that is not
// there (virtio-scsi: VIRTIO_SCSI_S_BAD_TARGET, what QEMU answers once the
// disk is unplugged). Everything else also happens to devices that stay.
var hostStatuses = [...]struct {
	name string
	kind hostKind
}{
	hostOK:                 {"DID_OK", hostKindOther},
	hostNoConnect:          {"DID_NO_CONNECT", hostKindGone},
	hostBusBusy:            {"DID_BUS_BUSY", hostKindBusy},
	hostTimeOut:            {"DID_TIME_OUT", hostKindTimeout},
	hostBadTarget:          {"DID_BAD_TARGET", hostKindGone},
	hostAbort:              {"DID_ABORT", hostKindOther},
	hostParity:             {"DID_PARITY", hostKindOther},
	hostError:              {"DID_ERROR", hostKindOther},
	hostReset:              {"DID_RESET", hostKindOther},
	hostBadIntr:            {"DID_BAD_INTR", hostKindOther},
	hostPassthrough:        {"DID_PASSTHROUGH", hostKindOther},
	hostSoftError:          {"DID_SOFT_ERROR", hostKindBusy},
	hostImmRetry:           {"DID_IMM_RETRY", hostKindBusy},
	hostRequeue:            {"DID_REQUEUE", hostKindBusy},
	hostTransportDisrupted: {"DID_TRANSPORT_DISRUPTED", hostKindBusy},
	hostTransportFailfast:  {"DID_TRANSPORT_FAILFAST", hostKindOther},
	hostTargetFailure:      {"DID_TARGET_FAILURE", hostKindOther},
	hostNexusFailure:       {"DID_NEXUS_FAILURE", hostKindOther},
	hostAllocFailure:       {"DID_ALLOC_FAILURE", hostKindOther},
	hostMediumError:        {"DID_MEDIUM_ERROR", hostKindOther},
	hostTransportMarginal:  {"DID_TRANSPORT_MARGINAL", hostKindOther},
}

func hostKindOf(h uint16) hostKind {
	if int(h) < len(hostStatuses) {
		return hostStatuses[h].kind
	}
	return hostKindOther
}

// HostError reports a non-zero host or driver status from the kernel's SCSI
// midlayer. It matches ErrNoDevice when the target is gone, otherwise
// ErrTimeout on timeouts and ErrBusy on retryable conditions; it always
// matches ErrTransport.
//
// Whether the target is gone is not guessed from the host status: when a
// device disappears mid-command the midlayer fails what was in flight with
// whatever the host driver reports — DID_NO_CONNECT or DID_BAD_TARGET, but
// also DID_ABORT (virtio-scsi: QEMU cancelled the request as it unplugged
// the disk), DID_ERROR (a command queued while the device was already in
// state "cancel", which scsi_queue_rq refuses with DID_ERROR because
// "cancel" still counts as online), DID_RESET, DID_TIME_OUT or a transport
// status — and the same statuses happen on a device that stays. So for any
// status but DID_NO_CONNECT and DID_BAD_TARGET the transport reads the
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

// Is implements errors.Is matching. A gone device is only ErrNoDevice (and
// ErrTransport): the timeout or busy condition it caused is not worth a
// retry.
func (e *HostError) Is(target error) bool {
	gone := e.Gone || hostKindOf(e.Host) == hostKindGone
	switch target {
	case ErrNoDevice:
		return gone
	case ErrTimeout:
		return !gone && (hostKindOf(e.Host) == hostKindTimeout || e.Driver&0x0f == driverTimeout)
	case ErrBusy:
		return !gone && (hostKindOf(e.Host) == hostKindBusy || e.Driver&0x0f == driverBusy)
	case ErrTransport:
		return true
	}
	return false
}

// checkState reads the device's state after the command failed (see
// HostError): with settle for a status that does not say gone by itself,
// once (for the message) for one that does. A driver-only status (the host
// delivered the command) is not checked.
func (e *HostError) checkState(stateFile string, settle time.Duration) {
	switch {
	case e.Host == hostOK:
	case hostKindOf(e.Host) == hostKindGone:
		e.State, _ = deviceGone(stateFile, 0)
	default:
		e.State, e.Gone = deviceGone(stateFile, settle)
	}
}

func hostName(h uint16) string {
	if int(h) < len(hostStatuses) {
		return hostStatuses[h].name
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
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
			// The directory went, or its device is being torn down
			// under the attribute.
			return "removed", true
		case err != nil:
			// Anything else says nothing yet: read again until settle.
			if !time.Now().Before(deadline) {
				return "", false
			}
			time.Sleep(10 * time.Millisecond)
			continue
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

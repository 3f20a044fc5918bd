package scsi

import (
	"errors"
	"fmt"
)

// Sentinel errors. SenseError values match the sense-key sentinels through
// their Is method; transports wrap the others in *OpError.
var (
	ErrNoDevice       = errors.New("no such device")
	ErrTimeout        = errors.New("command timed out")
	ErrNotSG          = errors.New("not a SCSI generic device")
	ErrClosed         = errors.New("transport closed")
	ErrTransport      = errors.New("transport error")
	ErrPhaseError     = errors.New("bulk-only phase error")
	ErrShortResponse  = errors.New("response too short")
	ErrInvalidRequest = errors.New("invalid request")

	// Sense-key classes (see SenseError.Is).
	ErrNotReady        = errors.New("not ready")
	ErrMediumError     = errors.New("medium error")
	ErrHardwareError   = errors.New("hardware error")
	ErrIllegalRequest  = errors.New("illegal request")
	ErrUnitAttention   = errors.New("unit attention")
	ErrDataProtect     = errors.New("data protect")
	ErrAbortedCommand  = errors.New("aborted command")
	ErrCheckCondition  = errors.New("check condition")
	ErrBusy            = errors.New("target busy")
	ErrReservationHeld = errors.New("reservation conflict")
)

// OpError records the operation that failed and why.
type OpError struct {
	Op  string // e.g. "sg_io", "bot cbw", "read(10)"
	Err error
}

func (e *OpError) Error() string { return e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

// StatusError reports a SCSI status other than GOOD and CHECK CONDITION
// (for example BUSY or RESERVATION CONFLICT).
type StatusError struct {
	Op     string
	Status Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: status %s", e.Op, e.Status)
}

// Is matches ErrBusy for BUSY/TASK SET FULL and ErrReservationHeld.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrBusy:
		return e.Status == StatusBusy || e.Status == StatusTaskSetFull
	case ErrReservationHeld:
		return e.Status == StatusReservationConflict
	}
	return false
}

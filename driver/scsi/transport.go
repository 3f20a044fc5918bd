package scsi

import (
	"context"
	"time"
)

// Direction is the data phase direction of a command.
type Direction uint8

const (
	DirNone Direction = iota // no data phase
	DirIn                    // device to host (READ, INQUIRY)
	DirOut                   // host to device (WRITE)
)

func (d Direction) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	}
	return "none"
}

// Command is one SCSI command for a Transport.
type Command struct {
	CDB  []byte
	Dir  Direction
	Data []byte // data-in buffer to fill, or data-out payload
	// Timeout bounds the command on the device; 0 means DefaultTimeout.
	// The context's deadline, if earlier, wins.
	Timeout time.Duration
}

// DefaultTimeout is used when Command.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// Result is what the target answered.
type Result struct {
	Status Status
	// Sense holds sense data when Status is CHECK CONDITION (transports
	// without autosense fetch it with REQUEST SENSE). It may be a view into
	// transport memory that is valid until the next Execute.
	Sense []byte
	// Residual is the number of bytes of Data not transferred.
	Residual int
}

// Transport executes SCSI commands. An error means the command did not
// complete at the transport level (device gone, timeout, protocol failure);
// a SCSI status, including CHECK CONDITION, is not an error at this layer.
// Implementations are safe for concurrent use; commands are serialised.
type Transport interface {
	Execute(ctx context.Context, cmd *Command) (Result, error)
	Close() error
}

// timeoutFor returns the effective command timeout given ctx.
func timeoutFor(ctx context.Context, t time.Duration) time.Duration {
	if t <= 0 {
		t = DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		if r := time.Until(dl); r < t {
			t = r
		}
	}
	return t
}

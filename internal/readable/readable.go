package readable

import (
	"errors"
	"fmt"
)

// ErrNotSupported: this platform, or this connection, cannot be watched.
var ErrNotSupported = errors.New("readiness watch not supported")

// OpError is a watch operation that failed.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return fmt.Sprintf("readable %s: %v", e.Op, e.Err) }
func (e *OpError) Unwrap() error { return e.Err }

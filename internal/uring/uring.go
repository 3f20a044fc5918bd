package uring

import (
	"errors"
	"fmt"
)

// ErrNotSupported: this kernel or process cannot use io_uring.
var ErrNotSupported = errors.New("io_uring not supported")

// ErrNotSent is the result of a send the ring could not submit (the ring
// failed first): nothing of it was written.
var ErrNotSent = errors.New("not sent")

// OpError is a ring operation that failed.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return fmt.Sprintf("io_uring %s: %v", e.Op, e.Err) }
func (e *OpError) Unwrap() error { return e.Err }

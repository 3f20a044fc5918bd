//go:build !linux

package scsi

import (
	"context"
	"errors"
	"os"
)

// ErrNotSupported is returned by OpenSG on systems without Linux sg.
var errSGUnsupported = errors.New("SG_IO is only available on Linux")

// SG is a Transport on a Linux SCSI generic node; elsewhere OpenSG fails.
type SG struct{}

var _ Transport = (*SG)(nil)

// OpenSG fails on this operating system.
func OpenSG(path string) (*SG, error) {
	return nil, &OpError{Op: "open " + path, Err: errSGUnsupported}
}

// SGFromFile fails on this operating system.
func SGFromFile(f *os.File, path string) (*SG, error) {
	return nil, &OpError{Op: "open " + path, Err: errSGUnsupported}
}

// File returns nil.
func (s *SG) File() *os.File { return nil }

// Path returns "".
func (s *SG) Path() string { return "" }

// Version returns 0.
func (s *SG) Version() int { return 0 }

// Execute fails.
func (s *SG) Execute(context.Context, *Command) (Result, error) {
	return Result{}, &OpError{Op: "sg_io", Err: errSGUnsupported}
}

// Close does nothing.
func (s *SG) Close() error { return nil }

//go:build !linux

package wire

import (
	"errors"
	"os"
)

// errUnsupported: the protocol's socket needs Linux (SOCK_SEQPACKET,
// SCM_RIGHTS with close-on-exec, peeked message sizes).
var errUnsupported = errors.New("out-of-process drivers need Linux")

// Conn is one end of the protocol's socket; off Linux it cannot be made.
type Conn struct{}

// Pair fails off Linux.
func Pair() (*Conn, *os.File, error) { return nil, nil, errUnsupported }

// NewConn fails off Linux.
func NewConn(f *os.File) (*Conn, error) { f.Close(); return nil, errUnsupported }

// Send fails off Linux.
func (c *Conn) Send(*Message, ...*os.File) error { return errUnsupported }

// Receive fails off Linux.
func (c *Conn) Receive() (*Message, []*os.File, error) { return nil, nil, errUnsupported }

// Close does nothing off Linux.
func (c *Conn) Close() error { return nil }

// CloseWrite does nothing off Linux.
func (c *Conn) CloseWrite() error { return nil }

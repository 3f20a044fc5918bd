//go:build !linux

package hotplug

import (
	"context"
	"errors"
)

// ErrNotSupported: kernel uevents exist only on Linux.
var ErrNotSupported = errors.New("netlink uevents need Linux")

// Netlink is a source of kernel uevents; on this OS NewNetlink always fails.
type Netlink struct{}

var _ Source = (*Netlink)(nil)

// NewNetlink returns ErrNotSupported outside Linux.
func NewNetlink(NetlinkConfig) (*Netlink, error) {
	return nil, &OpError{Op: "socket", Err: ErrNotSupported}
}

func (*Netlink) Next(context.Context) (Event, error) { return Event{}, ErrNotSupported }
func (*Netlink) Close() error                        { return nil }
func (*Netlink) Stats() Stats                        { return Stats{} }
func (*Netlink) ColdplugEvents() int                 { return 0 }

//go:build !linux

package peercred

import "net"

// Unix is not supported here.
func Unix(*net.UnixConn) (Cred, error) { return Cred{}, ErrNotSupported }

// TCP is not supported here.
func TCP(net.Addr, net.Addr) (Cred, error) { return Cred{}, ErrNotSupported }

//go:build !linux

package userclient

import "net"

// serverUID cannot tell off Linux: Dial does not check the server there.
func serverUID(net.Conn) (uint32, bool, error) { return 0, false, nil }

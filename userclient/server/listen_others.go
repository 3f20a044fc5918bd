//go:build !linux

package server

import (
	"errors"
	"net"
	"os"
)

// listenUnix creates the socket and then sets its mode and group by path
// (Linux sets them on descriptors before listening, see listen_linux.go).
func listenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Err != nil {
			err = ne.Err // without net's "listen unix <path>"
		}
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, err
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return ln, nil
}

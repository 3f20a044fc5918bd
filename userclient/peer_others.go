//go:build !linux

package userclient

import (
	"errors"
	"io"
	"net"
)

var errUnsupported = errors.New("userclient: peer credentials need Linux")

func commandName(int32) string { return "" }

func peerCred(*net.UnixConn) (Cred, error) { return Cred{}, errUnsupported }

func watchPeer(*net.UnixConn, int32, func()) (io.Closer, error) { return nil, errUnsupported }
